"""DDP: two processes (gloo, CPU) launched by torch.distributed.run train the tiny model; the
replicas' parameters must stay bit-identical."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import REPO

WORKER = textwrap.dedent(
    """
    import os, sys, torch
    from dfmvr.train.trainer import Trainer, TrainConfig
    data, out = sys.argv[1], sys.argv[2]
    cfg = TrainConfig(data=data, out=out, variant="tiny", epochs=1, batch=1, progress=False,
                      max_steps_per_epoch=2, seed=3)
    trainer = Trainer(cfg)
    assert trainer.world == 2 and torch.distributed.get_backend() == "gloo"
    last = trainer.run()
    # parameters only: BN running statistics are per replica between DDP's buffer broadcasts
    state = {k: v.detach() for k, v in trainer.model.named_parameters()}
    torch.save({"state": state, "last": last, "steps": trainer.step},
               os.path.join(out, f"rank{trainer.rank}.pt"))
    trainer.close()
    """
)


@pytest.mark.slow      # two processes (~11 s); single-process training is covered by the fast tests
def test_two_process_ddp_keeps_replicas_identical(synth4, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(synth4), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [torch.load(out / f"rank{i}.pt", weights_only=True) for i in range(2)]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert ranks[0]["last"]["replicas_identical"] is True
    # the replicas did train: the weights moved away from a fresh model's initialisation
    torch.manual_seed(3)
    from dfmvr.models.variants import build_model
    fresh = build_model("tiny").state_dict()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], fresh[k])]
    assert any(k.startswith("rednet_fc.") for k in moved)
    # only rank 0 logged and checkpointed
    assert (out / "checkpoint.safetensors").is_file()
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert len([s for s in steps if '"kind": "step"' in s]) == 2
