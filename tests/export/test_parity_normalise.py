"""parity_inputs normalises through the card's one home, ``ModelCard.normalise`` (issue 20, follow-up).

Real: parity_inputs, the synthetic triplet renderer, ModelCard.normalise. Stand-in: a card with
non-default mean/std (so an inline formula with the defaults would disagree), and in the second test
a recording wrapper around ModelCard.normalise.
"""

from __future__ import annotations

import numpy as np

from dfmvr.card import ModelCard
from dfmvr.export.parity import parity_inputs


def test_parity_inputs_are_card_normalise_of_the_rendered_triplets():
    from dfmvr.face.synthetic import default_face_model
    from dfmvr.synth.dataset import TripletGenerator

    card = ModelCard("tiny", {}, input_mean=0.25, input_std=2.0)
    x = parity_inputs(card, batch=2, seed=3)
    gen = TripletGenerator(default_face_model(), seed=3)
    np.testing.assert_array_equal(x[0], card.normalise(gen.sample(0).images[None])[0])
    want = card.normalise(gen.sample(1).images[None])[0]
    np.testing.assert_array_equal(x[1, :-1], want[:-1])
    assert (x[1, -1] == 0).all()                         # every second triplet: right view missing


def test_parity_inputs_call_card_normalise(monkeypatch):
    calls = []
    real = ModelCard.normalise

    def recording(self, images):
        calls.append(images.shape)
        return real(self, images)

    monkeypatch.setattr(ModelCard, "normalise", recording)
    parity_inputs(ModelCard("tiny", {}), batch=1)
    assert calls == [(1, 3, 224, 224, 3)]
