import pytest
import torch
import torch.nn.functional as F

from reinlite.models.head import (Mask2FormerHead, MSDeformAttn, ms_deform_attn_sample,
                           semantic_inference, sine_positional_encoding)



def _feats(b=2, c=24, h=32, w=64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, c, h // s, w // s, generator=g) for s in (4, 8, 16, 32)]


def _bilinear_zero_pad(v, x, y):
    """Reference bilinear sample of v [d, H, W] at normalised (x, y), zero outside."""
    d, hh, ww = v.shape
    px, py = x * ww - 0.5, y * hh - 0.5
    x0, y0 = int(torch.floor(px)), int(torch.floor(py))
    out = torch.zeros(d)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < ww and 0 <= yi < hh:
                out += wgt * v[:, yi, xi]
    return out


def test_ms_deform_sample_matches_loop():
    g = torch.Generator().manual_seed(1)
    shapes = [(3, 5), (2, 4)]
    b, nh, d, nq, npnt = 1, 2, 3, 4, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), nh, d, generator=g)
    loc = torch.rand(b, nq, nh, len(shapes), npnt, 2, generator=g) * 1.2 - 0.1
    wts = torch.rand(b, nq, nh, len(shapes), npnt, generator=g)
    out = ms_deform_attn_sample(value, shapes, loc, wts).view(b, nq, nh, d)
    starts = [0, 15]
    for q in range(nq):
        for h in range(nh):
            ref = torch.zeros(d)
            for lvl, (hh, ww) in enumerate(shapes):
                v = value[0, starts[lvl]:starts[lvl] + hh * ww, h].T.reshape(d, hh, ww)
                for p in range(npnt):
                    x, y = loc[0, q, h, lvl, p]
                    ref += wts[0, q, h, lvl, p] * _bilinear_zero_pad(v, x, y)
            torch.testing.assert_close(out[0, q, h], ref, atol=1e-5, rtol=1e-5)


def test_ms_deform_attn_shapes_and_grad():
    attn = MSDeformAttn(dim=16, num_heads=4, num_levels=2, num_points=3)
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(2, 30, 16, requires_grad=True)
    query = torch.randn(2, 5, 16)
    ref = torch.rand(2, 5, 2, 2)
    out = attn(query, ref, value, shapes)
    assert out.shape == (2, 5, 16)
    out.sum().backward()
    assert value.grad is not None and value.grad.abs().sum() > 0


def test_sine_positional_encoding():
    pos = sine_positional_encoding(torch.zeros(2, 8, 3, 5))
    assert pos.shape == (2, 8, 3, 5)
    assert torch.allclose(pos[0, :4, 0, 0], pos[0, :4, 0, 4])  # y part constant along x
    assert torch.allclose(pos[0, 4:, 0, 1], pos[0, 4:, 2, 1])  # x part constant along y


@pytest.mark.parametrize("pixel_decoder", ["fpn", "msdeform"])
def test_head_shapes_rein_queries(pixel_decoder):
    torch.manual_seed(0)
    m, q_dim, k = 6, 16, 5
    head = Mask2FormerHead(24, num_classes=k, num_queries=m, query_dim=q_dim, hidden_dim=32,
                           num_layers=4, num_heads=4, ffn_dim=64, mask_dim=32,
                           pixel_decoder=pixel_decoder, pixel_decoder_layers=2,
                           pixel_decoder_ffn=64)
    feats = _feats()
    queries = torch.randn(m, q_dim, requires_grad=True)
    out = head(feats, queries)
    assert out["pred_logits"].shape == (2, m, k + 1)
    assert out["pred_masks"].shape == (2, m, 8, 16)
    assert len(out["aux_outputs"]) == 4
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, m, k + 1)
        assert aux["pred_masks"].shape == (2, m, 8, 16)
    loss = out["pred_logits"].sum() + out["pred_masks"].mean()
    loss.backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    sem = head.predict(feats, queries, size=(32, 64))
    assert sem.shape == (2, k, 32, 64)


def test_query_dim_differs_from_hidden_and_learned_queries():
    head = Mask2FormerHead(24, num_classes=3, num_queries=4, query_source="learned",
                           hidden_dim=32, num_layers=2, num_heads=4, ffn_dim=32, mask_dim=16,
                           pixel_decoder="fpn")
    out = head(_feats(b=1), None)
    assert out["pred_masks"].shape == (1, 4, 8, 16)
    with pytest.raises(ValueError, match="query_source='learned'"):
        head(_feats(b=1), torch.randn(4, 32))
    rein_head = Mask2FormerHead(24, num_classes=3, num_queries=4, query_dim=8, hidden_dim=32,
                                num_layers=1, num_heads=4, ffn_dim=32, pixel_decoder="fpn")
    with pytest.raises(ValueError, match="needs the Rein queries"):
        rein_head(_feats(b=1), None)
    with pytest.raises(ValueError, match="num_queries=4"):
        rein_head(_feats(b=1), torch.randn(5, 8))
    assert rein_head(_feats(b=1), torch.randn(4, 8))["pred_logits"].shape == (1, 4, 4)


def test_rein_queries_are_the_positional_embedding():
    """Rein queries enter as q_pos (identity when Q == D) and as Linear(Q, D) content."""
    head = Mask2FormerHead(24, num_classes=3, num_queries=4, query_dim=32, hidden_dim=32,
                           num_layers=1, num_heads=4, ffn_dim=32, mask_dim=16, pixel_decoder="fpn")
    assert isinstance(head.query_pos, torch.nn.Identity)
    assert isinstance(head.query_feat, torch.nn.Linear)
    seen = {}
    layer = head.layers[0]
    orig = layer.forward

    def spy(x, q_pos, *a, **kw):
        seen["x"], seen["q_pos"] = x, q_pos
        return orig(x, q_pos, *a, **kw)

    layer.forward = spy
    q = torch.randn(4, 32)
    head(_feats(b=2), q)
    torch.testing.assert_close(seen["q_pos"][1], q)
    torch.testing.assert_close(seen["x"][0], head.query_feat(q))


def test_semantic_inference_matches_loop():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, generator=g)
    masks = torch.randn(2, 3, 4, 6, generator=g)
    sem = semantic_inference(logits, masks)
    assert sem.shape == (2, 4, 4, 6)
    ref = torch.zeros(2, 4, 4, 6)
    for b in range(2):
        p = logits[b].softmax(-1)
        for q in range(3):
            for k in range(4):
                ref[b, k] += p[q, k] * masks[b, q].sigmoid()
    torch.testing.assert_close(sem, ref)
    up = semantic_inference(logits, masks, size=(8, 12))
    torch.testing.assert_close(
        up, semantic_inference(logits, F.interpolate(masks, size=(8, 12), mode="bilinear")))


def test_fully_masked_rows_do_not_give_nan():
    head = Mask2FormerHead(24, num_classes=3, num_queries=4, query_dim=32, hidden_dim=32,
                           num_layers=3, num_heads=4, ffn_dim=32, mask_dim=16, pixel_decoder="fpn")
    # a huge negative bias on the mask embedding makes every predicted mask empty
    with torch.no_grad():
        head.mask_embed[-1].bias.fill_(-1e4)
        head.pixel_decoder.mask_feature.bias.fill_(1.0)
    out = head(_feats(b=1), torch.randn(4, 32))
    assert torch.isfinite(out["pred_logits"]).all()


def _reference_forward(head, feats, queries):
    """The decoder as first written (positional encodings recomputed at every call, the mask
    product as an einsum, the no-NaN rule applied in the layer loop): the cached and
    reorganised forward must agree with it bit for bit."""
    mask_features, ms = head.pixel_decoder(feats)
    b = mask_features.shape[0]
    mems, mem_pos, sizes = [], [], []
    for lvl, x in enumerate(ms):
        sizes.append(tuple(x.shape[-2:]))
        mem_pos.append(sine_positional_encoding(x).flatten(2).transpose(1, 2))
        mems.append(x.flatten(2).transpose(1, 2) + head.level_embed.weight[lvl])
    content = head.query_feat(queries).unsqueeze(0).expand(b, -1, -1)
    q_pos = head.query_pos(queries).unsqueeze(0).expand(b, -1, -1)

    def predict(x, size):
        y = head.decoder_norm(x)
        masks = torch.einsum("bqc,bchw->bqhw", head.mask_embed(y), mask_features)
        with torch.no_grad():
            a = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
            a = (a.sigmoid().flatten(2) < 0.5).unsqueeze(1).expand(-1, head.num_heads, -1, -1)
        return head.class_embed(y), masks, a.flatten(0, 1)

    preds = []
    logits, masks, attn = predict(content, sizes[0])
    preds.append((logits, masks))
    x = content
    for i, layer in enumerate(head.layers):
        attn = attn & ~attn.all(-1, keepdim=True)
        x = layer(x, q_pos, mems[i % 3], mem_pos[i % 3], attn_mask=attn)
        logits, masks, attn = predict(x, sizes[(i + 1) % 3])
        preds.append((logits, masks))
    return preds


def test_head_matches_the_reference_forward_bit_for_bit():
    torch.manual_seed(0)
    head = Mask2FormerHead(24, num_classes=5, num_queries=6, query_dim=16, hidden_dim=32,
                           num_layers=4, num_heads=4, ffn_dim=64, mask_dim=32, pixel_decoder="fpn")
    feats = _feats(b=3)
    queries = torch.randn(6, 16)
    with torch.inference_mode():  # the cached encodings made here serve training too
        head(feats, queries)
    results = []
    for run in (lambda: head(feats, queries), lambda: _reference_forward(head, feats, queries)):
        head.zero_grad()
        out = run()
        if isinstance(out, dict):
            out = [(a["pred_logits"], a["pred_masks"]) for a in out["aux_outputs"]] + [
                (out["pred_logits"], out["pred_masks"])]
        flat = [t for pair in out for t in pair]
        g = torch.Generator().manual_seed(1)
        torch.autograd.backward(flat, [torch.randn(t.shape, generator=g) for t in flat])
        results.append((flat, [p.grad.clone() for p in head.parameters()]))
    (new, g_new), (ref, g_ref) = results
    assert len(new) == len(ref)
    assert all(torch.equal(a, b) for a, b in zip(new, ref))
    assert all(torch.equal(a, b) for a, b in zip(g_new, g_ref))


def test_from_config_and_the_pixel_decoder_registry():
    from reinlite.config import HeadConfig
    from reinlite.models.head import PIXEL_DECODERS, FPNPixelDecoder, MSDeformAttnPixelDecoder

    cfg = HeadConfig(num_classes=3, hidden_dim=32, num_layers=3, num_heads=4, ffn_dim=64, mask_dim=16,
                     pixel_decoder="fpn")
    torch.manual_seed(0)
    a = Mask2FormerHead.from_config(cfg, 24, num_queries=4, query_source="learned", query_dim=32)
    torch.manual_seed(0)
    b = Mask2FormerHead(24, num_classes=3, num_queries=4, query_source="learned", query_dim=32, hidden_dim=32,
                        num_layers=3, num_heads=4, ffn_dim=64, mask_dim=16, pixel_decoder="fpn")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert isinstance(a.pixel_decoder, FPNPixelDecoder) and set(PIXEL_DECODERS) == {"fpn", "msdeform"}
    msd = Mask2FormerHead.from_config(HeadConfig(num_classes=19, hidden_dim=32, num_heads=4, pixel_decoder_layers=1), 24, 4)
    assert isinstance(msd.pixel_decoder, MSDeformAttnPixelDecoder) and len(msd.pixel_decoder.layers) == 1
    with pytest.raises(ValueError, match="pixel_decoder must be one of msdeform, fpn"):
        Mask2FormerHead(24, pixel_decoder="unet")
