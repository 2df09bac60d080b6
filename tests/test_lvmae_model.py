"""LV-MAE model: masking bookkeeping on ragged batches, semantic masking, loss, isolation, probes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lvu.models.lvmae import (
    LVMAE,
    AttentiveProbe,
    LinearProbe,
    LVMAEConfig,
    Masking,
    PosEmbed,
    ReconLoss,
    random_mask,
    semantic_mask,
    sincos_1d,
)


def tiny(**overrides) -> LVMAE:
    options = dict(input_dim=16, embed_dim=16, depth=2, num_heads=2, decoder_dim=8, decoder_depth=1,
                   decoder_num_heads=2, max_tokens=32, mask_ratio=0.4)
    cfg = LVMAEConfig(**{**options, **overrides})
    torch.manual_seed(0)
    return LVMAE(cfg)


def ragged(lengths=(12, 7, 3), dim=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=g)
    valid = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    return x, valid


def test_mask_counts_and_padding_for_a_ragged_batch():
    x, valid = ragged()
    mask = random_mask(valid, 0.4, torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [5, 3, 2]  # MAE keeps int(n * 0.6): 7 of 12, 4 of 7, 1 of 3
    assert not (mask & ~valid).any()  # padding is never masked ...
    model = tiny()
    latent, key_valid, visible_idx = model.encode(x, valid, mask)
    visible = valid & ~mask
    assert latent.shape == (3, 1 + 7, 16) and key_valid.sum(1).tolist() == [8, 5, 2]
    for b in range(3):  # ... nor visible: the encoder gets exactly the visible positions, in temporal order
        n = int(visible[b].sum())
        assert visible_idx[b, :n].tolist() == visible[b].nonzero().flatten().tolist()


def test_encoder_sees_only_visible_tokens_and_samples_stay_apart():
    model = tiny().eval()
    x, valid = ragged()
    mask = random_mask(valid, 0.4, torch.Generator().manual_seed(0))
    reference, key_valid, _ = model.encode(x, valid, mask)
    changed = x.clone()
    changed[mask] += 100.0  # masked clips
    changed[~valid] = 7.0  # padding
    # Rows past a sample's visible count are unused slots (never attended to, never read): compare the real ones.
    torch.testing.assert_close(model.encode(changed, valid, mask)[0][key_valid], reference[key_valid])
    other = x.clone()
    other[1] += 1.0  # another sample
    out = model(other, valid, mask=mask)
    torch.testing.assert_close(out.per_sample[[0, 2]], model(x, valid, mask=mask).per_sample[[0, 2]])


def test_semantic_masking_masks_the_clips_least_similar_to_their_predecessor():
    # Scenes A (clips 0-3), B (4-6, orthogonal to A: cosine 0), C (7-9, opposite to B: cosine -1), each clip a
    # slightly jittered copy of its scene.
    a, b = torch.eye(16)[0], torch.eye(16)[1]
    jitter = 0.01 * torch.randn(10, 16, generator=torch.Generator().manual_seed(0))
    seq = torch.stack([a] * 4 + [b] * 3 + [-b] * 3) + jitter
    valid = torch.ones(1, 10, dtype=torch.bool)
    mask = semantic_mask(seq[None], valid, ratio=0.2)  # keep 8, mask 2: the scene starts, least similar first
    assert mask[0].nonzero().flatten().tolist() == [4, 7]
    assert semantic_mask(seq[None], valid, ratio=0.1).nonzero()[:, 1].tolist() == [7]  # cosine -1 beats cosine 0
    # Padding never counts, even if it looks novel.
    padded = torch.cat([seq, torch.randn(3, 16)])[None]
    mask = semantic_mask(padded, torch.arange(13)[None] < 10, ratio=0.2)
    assert mask[0].nonzero().flatten().tolist() == [4, 7]
    assert tiny(masking=Masking.semantic).make_mask(seq[None], valid).sum() == 4  # model uses its mask_ratio 0.4


def test_loss_ignores_padding_and_one_sample_matches_its_padded_batch():
    model = tiny()
    x, valid = ragged()
    mask = random_mask(valid, 0.4, torch.Generator().manual_seed(3))
    batch = model(x, valid, mask=mask)
    for b, n in enumerate((12, 7, 3)):
        alone = model(x[b:b + 1, :n], valid[b:b + 1, :n], mask=mask[b:b + 1, :n])
        torch.testing.assert_close(alone.loss, batch.per_sample[b], rtol=1e-5, atol=1e-6)
    noisy = x.clone()
    noisy[~valid] = 1e3
    torch.testing.assert_close(model(noisy, valid, mask=mask).loss, batch.loss)
    # The loss is the MSE against L2-normalised targets, over masked real tokens only.
    target = F.normalize(x, dim=-1)
    per_token = (batch.pred - target).pow(2).mean(-1)
    expected = per_token[mask & valid].mean()
    torch.testing.assert_close(batch.loss, expected)


@pytest.mark.parametrize("options", [{}, {"pos_embed": PosEmbed.learned}, {"loss": ReconLoss.cosine},
                                     {"masking": Masking.semantic}, {"input_proj": True, "embed_dim": 24}])
def test_training_reduces_the_loss(options):
    model = tiny(**options)
    x, valid = ragged((16, 10, 6, 12), seed=4)
    x = x.cumsum(1) / 4  # smooth sequences: masked clips are predictable from their neighbours
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        out = model(x, valid, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert model.cls_token.grad is not None and model.mask_token.grad.abs().sum() > 0


def test_sincos_table_and_input_checks():
    table = sincos_1d(256, 8)
    assert table.shape == (257, 8) and torch.all(table[0] == 0)
    torch.testing.assert_close(table[1], torch.tensor([0.0, 0, 0, 0, 1, 1, 1, 1]))  # position 0: sin 0, cos 0
    model = tiny()
    with pytest.raises(ValueError, match="33 tokens exceed max_tokens=32"):
        model(torch.randn(1, 33, 16), torch.ones(1, 33, dtype=torch.bool))
    with pytest.raises(ValueError, match="embeddings are 8 wide, the model expects input_dim=16"):
        model(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="set input_proj=true"):
        LVMAE(LVMAEConfig(input_dim=16, embed_dim=24, depth=1, num_heads=2, decoder_dim=8, decoder_depth=1,
                          decoder_num_heads=2))


def test_features_keep_temporal_order_and_probes_ignore_padding():
    model = tiny().eval()
    x, valid = ragged()
    tokens, key_valid = model.features(x, valid)
    assert tokens.shape == (3, 13, 16) and key_valid.sum(1).tolist() == [13, 8, 4]
    torch.testing.assert_close(model.features(x[1:2, :7], valid[1:2, :7])[0][0], tokens[1, :8], rtol=1e-5,
                               atol=1e-5)
    linear = LinearProbe(16, 5)
    garbage = tokens.clone()
    garbage[~key_valid] = 50.0
    torch.testing.assert_close(linear(garbage, key_valid), linear(tokens, key_valid))
    pooled = tokens[1, 1:8].mean(0)
    torch.testing.assert_close(linear(tokens, key_valid)[1], linear.head(pooled))
    attentive = AttentiveProbe(16, 5, num_heads=2)
    torch.testing.assert_close(attentive(garbage, key_valid), attentive(tokens, key_valid))
    assert attentive(tokens, key_valid).shape == (3, 5)
