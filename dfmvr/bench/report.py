"""The benchmark report as a Markdown table (the JSON report is the dict ``run_bench`` returns)."""

from __future__ import annotations

from .e2e import STAGES

__all__ = ["markdown_report"]


def _f(v, digits=1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def markdown_report(report: dict, title: str = "dfmvr bench") -> str:
    env = report["environment"]
    lines = [f"## {title}: {report['model'].get('variant', '?')}", ""]
    lines.append(f"Model: {report['model'].get('checkpoint') or report['model'].get('onnx') or report['model'].get('engine')}. "
                 f"Face model: {report['face_model']['name']} ({report['face_model']['num_vertices']} vertices). "
                 f"{report['settings']['iters']} timed iteration(s) after {report['settings']['warmup']} warm-up; "
                 f"outputs: {','.join(report['settings']['formats'])}; inputs: {report['settings']['inputs']}.")
    lines.append("")
    ref = (report.get("parity_reference") or {}).get("backend")
    head = (["backend", "batch", "min ms", "median ms", "p90 ms", "p99 ms", "triplets/s", "x torch (e2e)",
             "x torch (net)", f"mesh max mm vs {ref or '-'}", "mesh mean mm", "labels agree", "keypoints max px"]
            + [f"{s} ms" for s in STAGES] + ["net GFLOP/s", "% of GEMM"])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["backends"].items():
        for row in entry["batches"]:
            e2e, sp = row["end_to_end"], row.get("speedup_vs_torch") or {}
            cells = [name, str(row["batch"]), _f(e2e["min_ms"]), _f(e2e["median_ms"]), _f(e2e["p90_ms"]),
                     _f(e2e["p99_ms"]), _f(e2e["throughput_per_s"], 2),
                     _f(sp.get("end_to_end"), 2), _f(sp.get("network"), 2)]
            par = row.get("parity") or {}
            if par.get("error"):
                cells += [f"error: {par['error'][:60]}", "", "", ""]
            else:      # keypoints: blank where the graph has none
                cells += [_f(par.get("mesh_max_mm"), 4), _f(par.get("mesh_mean_mm"), 4),
                          _f(par.get("labels_agreement"), 4), _f(par.get("keypoints_max_px"), 4)]
            cells += [_f(row["stages"][s]["median_ms"]) for s in STAGES]
            frac = row.get("fraction_of_gemm")
            cells += [_f(row.get("network_gflops")), _f(None if frac is None else 100 * frac)]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Stage columns are medians per batch; latency columns are per batch, end to end.")
    pref = report.get("parity_reference")
    if pref and pref.get("backend"):
        lines.append(f"- Parity: each backend's coefficients on this run's inputs (the batch's triplets), assembled "
                     f"into posed meshes with the face model, against **{pref['backend']}** ({pref['description']}): "
                     "max and mean vertex distance in mm; 'labels agree' is the fraction of equal label pixels; "
                     "'keypoints max px' the largest distance of the graph's landmarks (crop pixels; blank: no "
                     "keypoints output).")
    elif pref:
        lines.append(f"- Parity: not measured ({pref.get('reason')})")
    for name, entry in report["backends"].items():
        if entry.get("description"):
            extra = ""
            if entry.get("compile_total_s") is not None:
                per = ", ".join(f"batch {b} {t:,.1f} s" for b, t in entry.get("compile_s", {}).items())
                extra = f"; compiled in {entry['compile_total_s']:,.1f} s before timing ({per})"
            elif entry.get("activate_s") is not None:
                extra = f"; loaded in {entry['activate_s']:,.2f} s"
            if entry.get("version"):
                extra += f"; version {entry['version']}"
            if name == "onnxruntime-int8" and entry.get("model"):
                extra += f"; graph {entry['model']}"
            lines.append(f"- {name}: {entry['description']}{extra}")
    for name, reason in report["unavailable"].items():
        lines.append(f"- **{name}**: not measured: {reason}")
    flops, gemm = report.get("flops") or {}, report.get("gemm") or {}
    if flops.get("total"):
        by = ", ".join(f"{k} {v / 1e9:,.2f}" for k, v in sorted(flops["by_op"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- FLOPs per triplet (from the graph): {flops['total'] / 1e9:,.2f} GFLOP ({by})")
    elif flops.get("error"):
        lines.append(f"- FLOPs: {flops['error']}")
    if gemm:
        lines.append(f"- GEMM rate measured in this run ({gemm['n']}^3 fp32): ONNX Runtime "
                     f"{gemm['onnxruntime_gflops']:,.1f} GFLOP/s, numpy {gemm['numpy_gflops']:,.1f} GFLOP/s (medians); "
                     f"'% of GEMM' is relative to the fastest single GEMM call, {gemm['best_gflops']:,.1f} GFLOP/s")
    load = report.get("load_average_1min", {})
    lines.append(f"- Machine: {env['cpu']}, {env['logical_cpus']} logical CPUs, threads {env['threads'] or 'default'}, "
                 f"GPU {env['gpu'] or 'none'}; load average {load.get('before')} -> {load.get('after')}; "
                 + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    return "\n".join(lines) + "\n"
