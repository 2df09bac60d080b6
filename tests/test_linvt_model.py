"""The LinVT module (lvu/models/linvt.py): linearity, ragged batches, selection, gradients, ablation variants."""

from __future__ import annotations

import pytest
import torch

from lvu.models.linvt import LinVT, LinVTConfig, Variant, select_top_k

DIM = 16


def _cfg(**kw) -> LinVTConfig:
    base = dict(dim=DIM, layers=1, heads=2, top_k=24, queries=[8, 4, 2])
    return LinVTConfig(**{**base, **kw})


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, 5, 6, DIM, generator=g)  # 2 samples, up to 5 frames of 6 tokens
    frame_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])  # the second video has 3 frames
    text = torch.randn(2, 7, DIM, generator=g)
    text_mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    return tokens, frame_mask, text, text_mask


@pytest.mark.parametrize("variant", list(Variant))
def test_every_output_token_is_a_convex_combination_of_input_tokens(variant):
    torch.manual_seed(0)
    model = LinVT(_cfg(variant=variant)).eval()
    tokens, frame_mask, text, text_mask = _inputs()
    out = model(tokens, frame_mask, text, text_mask, return_weights=True)
    w = out.weights  # [B, M, T*N]
    assert (w >= 0).all()
    rows = w[out.mask]
    torch.testing.assert_close(rows.sum(-1), torch.ones(len(rows)), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.tokens, w @ tokens.flatten(1, 2), rtol=1e-4, atol=1e-5)
    # Nothing comes from the second video's padded frames.
    assert w[1, :, 3 * 6:].abs().max() == 0
    expected = 5 if variant == Variant.avg else 14
    assert out.tokens.shape == (2, expected, DIM)


@pytest.mark.parametrize("variant", [Variant.multi_c, Variant.multi_b, Variant.single_a, Variant.avg])
def test_samples_do_not_see_each_other(variant):
    torch.manual_seed(0)
    model = LinVT(_cfg(variant=variant)).eval()
    tokens, frame_mask, text, text_mask = _inputs()
    reference = model(tokens, frame_mask, text, text_mask).tokens
    changed = tokens.clone()
    changed[1] += torch.randn_like(changed[1])
    text2 = text.clone()
    text2[1] += 1.0
    out = model(changed, frame_mask, text2, text_mask).tokens
    assert torch.equal(out[0], reference[0])
    assert not torch.allclose(out[1], reference[1])
    # Padding (frames past the second video's end, text past its length) changes nothing.
    padded = tokens.clone()
    padded[1, 3:] = 100.0
    text3 = text.clone()
    text3[1, 4:] = 100.0
    torch.testing.assert_close(model(padded, frame_mask, text3, text_mask).tokens, reference)


def test_the_scorer_is_trained_through_the_top_k_selection():
    torch.manual_seed(0)
    model = LinVT(_cfg())
    tokens, frame_mask, text, text_mask = _inputs()
    out = model(tokens, frame_mask, text, text_mask)
    (out.tokens ** 2).mean().backward()
    assert model.svr.score.weight.grad is not None and model.svr.score.weight.grad.abs().sum() > 0
    assert model.svr.layers[0].spatial.q.weight.grad.abs().sum() > 0


def test_top_k_keeps_the_best_tokens_in_temporal_order():
    tokens = torch.arange(8.0)[None, :, None].expand(1, 8, 2).clone()
    scores = torch.tensor([[0.1, 5.0, -1.0, 3.0, 0.0, 4.0, float("-inf"), 2.0]])
    picked, valid, _ = select_top_k(tokens, scores, 3, None)
    assert picked[0, :, 0].tolist() == [1.0, 3.0, 5.0] and valid.all()  # best three, in order of time
    picked, valid, _ = select_top_k(tokens, scores, 10, None)  # more than available: padding is flagged
    assert valid.sum() == 7 and picked[0, valid[0], 0].tolist() == [0, 1, 2, 3, 4, 5, 7]


def test_text_conditioning_switch():
    torch.manual_seed(0)
    tokens, frame_mask, text, text_mask = _inputs()
    on = LinVT(_cfg())
    off = LinVT(_cfg(text_conditioning=False))
    assert sum(p.numel() for p in off.parameters()) < sum(p.numel() for p in on.parameters())
    assert torch.equal(off(tokens, frame_mask, text, text_mask).tokens, off(tokens, frame_mask).tokens)
    assert not torch.allclose(on(tokens, frame_mask, text, text_mask).tokens,
                              on(tokens, frame_mask, text + 1, text_mask).tokens)
    with pytest.raises(ValueError, match="text conditioning is on but no text was given"):
        on(tokens, frame_mask)


def test_avg_baseline_is_one_mean_token_per_frame():
    tokens, frame_mask, _, _ = _inputs()
    out = LinVT(_cfg(variant=Variant.avg))(tokens, frame_mask)
    torch.testing.assert_close(out.tokens[out.mask], tokens.mean(2)[frame_mask])
    assert out.mask.tolist() == frame_mask.tolist()


def test_table_12_knobs_and_wrong_widths():
    model = LinVT(_cfg(layers=2, queries=[6, 3], top_k=10))
    tokens, frame_mask, text, text_mask = _inputs()
    assert model(tokens, frame_mask, text, text_mask).tokens.shape == (2, 9, DIM)
    assert len(model.svr.layers) == 2 and len(model.tta) == 2 and len(model.tta[0].layers) == 2
    with pytest.raises(ValueError, match="tokens are 8 wide, the module was built for dim=16"):
        model(torch.zeros(1, 2, 3, 8), torch.ones(1, 2, dtype=torch.bool))


def test_a_narrower_inner_width_keeps_tokens_in_the_host_space():
    torch.manual_seed(0)
    wide, narrow = LinVT(_cfg(dim=DIM)), LinVT(_cfg(dim=DIM, width=8))
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    tokens, frame_mask, text, text_mask = _inputs()
    out = narrow(tokens, frame_mask, text, text_mask, return_weights=True)
    assert out.tokens.shape == (2, 14, DIM) and (out.weights >= 0).all()
    torch.testing.assert_close(out.tokens, out.weights @ tokens.flatten(1, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("variant", "finest"), [(Variant.multi_c, 8), (Variant.tta_only, 8), (Variant.single_a, 14)])
def test_positions_let_linvt_tell_the_order_of_frames(variant, finest):
    """Without positions (the paper's module as written) and with k >= the token count, a frame shuffle changes no
    finest-scale output token (attention without positions is blind to order); with them (the default) it does,
    and the outputs stay convex combinations of the input tokens."""
    tokens, frame_mask, text, text_mask = _inputs()
    frame_mask = torch.ones_like(frame_mask)
    shuffled = tokens[:, torch.tensor([3, 0, 4, 1, 2])]
    for positions in (False, True):
        torch.manual_seed(0)
        model = LinVT(_cfg(variant=variant, top_k=30, positions=positions)).eval()
        forward = model(tokens, frame_mask, text, text_mask, return_weights=True)
        moved = model(shuffled, frame_mask, text, text_mask).tokens
        if positions:
            assert not torch.allclose(forward.tokens[:, :finest], moved[:, :finest], atol=1e-4)
            torch.testing.assert_close(forward.weights.sum(-1), torch.ones(2, 14), rtol=0, atol=1e-5)
            torch.testing.assert_close(forward.tokens, forward.weights @ tokens.flatten(1, 2), rtol=1e-4, atol=1e-5)
        else:
            torch.testing.assert_close(forward.tokens[:, :finest], moved[:, :finest], rtol=1e-4, atol=1e-5)


def test_exports_from_before_positions_load_without_them(tmp_path):
    import json

    model = LinVT(_cfg(positions=False))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["positions"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert LinVT.from_pretrained(tmp_path).cfg.positions is False


def test_shared_tta_weights_make_multi_c_and_multi_b_differ_only_in_how_scales_meet():
    """Table 4 confound: separate per-scale TTA stacks give multi_c ~2.1x multi_b's parameters; with shared weights
    the two have the same parameters (names and shapes), and differ in their outputs only by aggregating the scales
    one by one or together."""
    from lvu.models.linvt import TTAWeights

    torch.manual_seed(0)
    shared = LinVT(_cfg(variant=Variant.multi_c, tta_weights=TTAWeights.shared)).eval()
    separate = LinVT(_cfg(variant=Variant.multi_c))
    multi_b = LinVT(_cfg(variant=Variant.multi_b)).eval()
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(shared) == shapes(multi_b)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate) > 2 * count(shared) - count(shared.svr)
    multi_b.load_state_dict(shared.state_dict())
    tokens, frame_mask, text, text_mask = _inputs()
    a = shared(tokens, frame_mask, text, text_mask, return_weights=True)
    b = multi_b(tokens, frame_mask, text, text_mask).tokens
    assert a.tokens.shape == b.shape and not torch.allclose(a.tokens, b)
    torch.testing.assert_close(a.tokens, a.weights @ tokens.flatten(1, 2), rtol=1e-4, atol=1e-5)
    # Each scale uses its own query set: the finest scale's outputs read only the finest queries.
    with torch.no_grad():
        shared.tta[0].queries[8:] += 1.0
    assert torch.equal(shared(tokens, frame_mask, text, text_mask).tokens[:, :8], a.tokens[:, :8])


def test_checkpointed_svr_gives_the_same_gradients_and_recomputes_its_layers():
    tokens, frame_mask, text, text_mask = _inputs()
    grads, calls = {}, {}
    for checkpoint in (False, True):
        torch.manual_seed(0)
        model = LinVT(_cfg(checkpoint_svr=checkpoint)).train()
        calls[checkpoint] = 0

        def count(*_args, c=checkpoint):
            calls[c] += 1

        model.svr.layers[0].mlp[0].register_forward_hook(count)
        model(tokens, frame_mask, text, text_mask).tokens.square().mean().backward()
        grads[checkpoint] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    for k in grads[False]:
        torch.testing.assert_close(grads[True][k], grads[False][k], rtol=1e-5, atol=1e-6)
    assert calls == {False: 1, True: 2}  # recomputed once in backward


def test_shots_keep_svr_temporal_attention_inside_each_shot():
    """Frames 0-1 one shot, 2-4 another: with shots, changing frame 3 leaves frames 0-1's scores as they were;
    without, it changes them (temporal attention crosses the cut)."""
    torch.manual_seed(0)
    model = LinVT(_cfg(top_k=30, layers=2)).eval()
    tokens, frame_mask, text, text_mask = _inputs()
    frame_mask = torch.ones_like(frame_mask)
    shots = torch.tensor([[0, 0, 1, 1, 1]] * 2)
    changed = tokens.clone()
    changed[:, 3] += torch.randn_like(changed[:, 3])
    for given, stays in ((shots, True), (None, False)):
        before = model(tokens, frame_mask, text, text_mask, frame_shots=given).scores.view(2, 5, 6)
        after = model(changed, frame_mask, text, text_mask, frame_shots=given).scores.view(2, 5, 6)
        assert torch.allclose(before[:, :2], after[:, :2], atol=1e-6) is stays
        assert not torch.allclose(before[:, 2:], after[:, 2:])
    # Padded frames and a one-shot video: the same scores as without shots.
    padded_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    one_shot = torch.tensor([[0] * 5, [0, 0, 0, -1, -1]])
    torch.testing.assert_close(model(tokens, padded_mask, text, text_mask, frame_shots=one_shot).scores,
                               model(tokens, padded_mask, text, text_mask).scores)
