"""BlockPlan and BoxMask: round trips, intersection, validation, bounded-memory building."""

import math

import pytest
import torch

from diffattn.errors import PlanError
from diffattn.plan import BlockPlan, BoxMask


def random_mask(shape, keep=0.5):
    mask = torch.rand(shape) < keep
    mask[..., torch.randint(shape[-1], ())] = True  # never an empty row
    return mask


@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (2, 3, 4, 4), (1, 4, 9, 3)])
def test_block_mask_round_trip(shape):
    mask = random_mask(shape)
    plan = BlockPlan.from_block_mask(mask, 64, 32)
    assert torch.equal(plan.to_block_mask(), mask)
    # rows list their blocks in ascending order, padded with -1
    counts = plan.block_counts()
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in shape[:3]]):
        b, h, q = idx.tolist()
        row = plan.kv_indices[b, h, q]
        n = int(counts[b, h, q])
        assert torch.equal(row[:n], mask[b, h, q].nonzero().flatten().int())
        assert (row[n:] == -1).all()


def test_level_map_round_trip_and_segments():
    level_map = torch.tensor([[[[1, 0, 2, 8, 1], [4, 4, 0, 0, 2]]]])
    plan = BlockPlan.from_level_map(level_map, 128, 128)
    assert plan.levels == (1, 2, 4, 8)
    assert torch.equal(plan.to_level_map(), level_map.int())
    assert plan.kv_counts[0, 0, 0].tolist() == [2, 1, 0, 1]
    assert plan.kv_indices[0, 0, 0].tolist() == [0, 4, 2, 3]  # level 1 ids, then level 2, then level 8
    assert plan.kv_offsets[0, 0, 1].tolist() == [0, 0, 1, 3, 3]


def test_token_mask_matches_block_expansion_for_odd_lengths():
    mask = random_mask((1, 2, 3, 4))
    plan = BlockPlan.from_block_mask(mask, 32, 16)
    q_len, kv_len = 77, 50
    tokens = plan.to_token_mask(q_len, kv_len)
    assert tokens.shape == (1, 2, q_len, kv_len)
    for qi in (0, 31, 32, 76):
        for ki in (0, 15, 16, 49):
            assert bool(tokens[0, 1, qi, ki]) == bool(mask[0, 1, qi // 32, ki // 16])


def test_from_mask_mod_equals_token_reference():
    def band(b, h, q, k):
        return (q - k).abs() <= 20 + 5 * h

    q_len, kv_len = 150, 130
    plan = BlockPlan.from_mask_mod(band, 1, 2, q_len, kv_len, 32, 16)
    q = torch.arange(q_len)[:, None]
    k = torch.arange(kv_len)[None, :]
    for h in range(2):
        dense = band(torch.tensor(0), torch.tensor(h), q, k)
        padded = torch.zeros(math.ceil(q_len / 32) * 32, math.ceil(kv_len / 16) * 16, dtype=torch.bool)
        padded[:q_len, :kv_len] = dense
        expected = padded.reshape(padded.shape[0] // 32, 32, -1, 16).any(3).any(1)
        assert torch.equal(plan.to_block_mask()[0, h], expected)


def test_from_mask_mod_works_in_bounded_chunks(monkeypatch):
    import diffattn.plan as plan_module

    monkeypatch.setattr(plan_module, "_MASK_MOD_CHUNK", 1024)  # forces one query block per chunk
    seen = []

    def causal(b, h, q, k):
        seen.append(q.numel() * k.numel())
        return k <= q

    plan = BlockPlan.from_mask_mod(causal, 1, 1, 100, 100, 16, 16)
    assert max(seen) <= 16 * 112  # one q block x all keys at a time, never 100 x 100 at once
    assert torch.equal(plan.to_block_mask()[0, 0], torch.ones(7, 7, dtype=torch.bool).tril())


def test_intersection_keeps_common_blocks_at_coarser_level_and_never_empties_rows():
    a = torch.tensor([[[[1, 1, 0], [1, 0, 0]]]])
    b = torch.tensor([[[[2, 0, 1], [0, 1, 0]]]])
    both = BlockPlan.from_level_map(a) & BlockPlan.from_level_map(b)
    assert both.to_level_map()[0, 0].tolist() == [[2, 0, 0], [1, 0, 0]]  # row 1 would be empty: keeps a's row
    both.validate(1, 1, 256, 384)


def test_intersection_broadcasts_heads():
    a = BlockPlan.from_block_mask(random_mask((1, 1, 3, 3)))
    b = BlockPlan.from_block_mask(random_mask((1, 4, 3, 3)))
    assert (a & b).kv_indices.shape[:3] == (1, 4, 3)


def test_intersection_rejects_different_geometry():
    with pytest.raises(PlanError, match="geometry"):
        BlockPlan.dense(256, 256) & BlockPlan.dense(256, 384)


def test_validate_rejects_empty_rows_and_mismatched_lengths():
    mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    mask[0, 0, 1] = False
    plan = BlockPlan.from_block_mask(mask, 16, 16)
    with pytest.raises(PlanError, match="no kv block"):
        plan.validate(1, 1, 32, 32)
    with pytest.raises(PlanError, match="query blocks"):
        BlockPlan.dense(32, 32, 16, 16).validate(1, 1, 64, 32)
    with pytest.raises(PlanError, match="broadcast"):
        BlockPlan.from_block_mask(torch.ones(2, 1, 2, 2, dtype=torch.bool), 16, 16).validate(3, 1, 32, 32)


def test_check_contents_is_the_one_content_check():
    """`validate` and the kernels share one content check: counts in range, no empty row, ids are kv blocks."""
    fields = {"block_q": 16, "block_k": 16, "num_kv_blocks": 2}
    cases = [
        (BlockPlan(torch.tensor([[[[0, 5]]]]), torch.tensor([[[[2]]]]), **fields), "outside"),
        (BlockPlan(torch.tensor([[[[0, 1]]]]), torch.tensor([[[[-1]]]]), **fields), ">= 0"),
        (BlockPlan(torch.tensor([[[[0, 1]]]]), torch.tensor([[[[3]]]]), **fields), "width"),
    ]
    for plan, message in cases:
        with pytest.raises(PlanError, match=message):
            plan.check_contents()
        with pytest.raises(PlanError, match=message):
            plan.validate(1, 1, 16, 32)
    BlockPlan(torch.tensor([[[[1, 0]]]]), torch.tensor([[[[2]]]]), **fields).validate(1, 1, 16, 32)


def test_check_fits_rejects_a_token_mask_for_other_lengths():
    coords = torch.arange(10, dtype=torch.int32)[:, None]
    plan = BlockPlan.dense(10, 10, 4, 4)
    plan = BlockPlan(plan.kv_indices, plan.kv_counts, 4, 4, plan.num_kv_blocks, token_mask=BoxMask(coords, coords, coords))
    plan.check_fits(1, 1, 10, 10)
    with pytest.raises(PlanError, match="token mask is for 10x10"):
        plan.check_fits(1, 1, 9, 10)


def test_sync_free_equals_the_checked_builder_with_every_kv_block_of_room():
    mask = random_mask((2, 3, 4, 5))
    plan = BlockPlan.sync_free(mask, 64, 32)
    checked = BlockPlan.from_block_mask(mask, 64, 32)
    assert plan.trusted and not checked.trusted and plan.width == 5 and plan.levels == (1,)
    assert torch.equal(plan.kv_counts, checked.kv_counts)
    assert torch.equal(plan.kv_indices[..., : checked.width], checked.kv_indices)
    assert (plan.kv_indices[..., checked.width :] == -1).all()
    level_map = torch.tensor([[[[1, 2, 0, 8], [0, 0, 2, 1]]]])
    pooled = BlockPlan.sync_free(level_map, 64, 64, (1, 2, 8))
    assert torch.equal(pooled.to_level_map(), level_map.int()) and pooled.trusted


def _three_level_plan() -> BlockPlan:
    """Row 0 lists ids 0, 2 at level 1, 1 at level 2 and 3 at level 4; row 1 lists 2 at level 1 and 0 at level 2."""
    return BlockPlan.from_level_map(torch.tensor([[[[1, 2, 1, 4], [2, 0, 1, 0]]]]))


def test_slot_levels_give_each_slot_its_segment_level():
    plan = _three_level_plan()
    assert plan.kv_indices[0, 0].tolist() == [[0, 2, 1, 3], [2, 0, -1, -1]]
    assert plan.slot_levels()[0, 0].tolist() == [[1, 1, 2, 4], [1, 2, 0, 0]]


def test_keep_slots_keeps_flagged_slots_at_their_level_and_never_empties_a_row():
    plan = _three_level_plan()
    kept = torch.tensor([[[[False, True, True, False], [False, False, False, True]]]])  # row 1: only a slot past its count
    sub = plan.keep_slots(kept)
    assert sub.trusted and sub.levels == plan.levels and sub.width == plan.width
    assert sub.to_level_map()[0, 0].tolist() == [[0, 2, 1, 0], [0, 0, 1, 0]]  # row 1 keeps its first slot
    sub.validate(1, 1, 256, 512)


def test_dense_plan_density_and_token_coverage():
    plan = BlockPlan.dense(77, 300, 32, 64)
    assert plan.density() == 1.0
    assert plan.to_token_mask(77, 300).all()


def test_box_mask_is_exact_and_intersects():
    coords = torch.arange(10, dtype=torch.int32)[:, None]
    lo, hi = (coords - 2).clamp(min=0), (coords + 2).clamp(max=9)
    box = BoxMask(lo, hi, coords)
    dense = box.dense()
    assert torch.equal(dense, (coords - coords.T).abs() <= 2)
    narrower = BoxMask(coords - 1, coords + 1, coords)
    assert torch.equal((box & narrower).dense(), (coords - coords.T).abs() <= 1)
    plan = BlockPlan.dense(10, 10, 4, 4)
    plan = BlockPlan(plan.kv_indices, plan.kv_counts, 4, 4, plan.num_kv_blocks, token_mask=box)
    assert torch.equal(plan.to_token_mask(10, 10)[0, 0], dense)


def test_plan_rejects_bad_levels():
    with pytest.raises(PlanError):
        BlockPlan.from_level_map(torch.tensor([[[[3, 1]]]]))


def _swar_visible(packed) -> torch.Tensor:
    """The kernel's packed test, written out in torch: `[q_len, kv_len]`."""
    k = packed.k_coord.long()[None, :]
    lo, hi = packed.q_lo.long()[:, None], packed.q_hi.long()[:, None]
    return (((k | packed.guard) - lo) & (hi - k) & packed.guard) == packed.guard


@pytest.mark.parametrize("axes", [1, 2, 3])
def test_packed_box_test_equals_the_box_mask(axes):
    """Random boxes that stick out of the keys' range, miss it, or are empty on one axis; negative coordinates."""
    gen = torch.Generator().manual_seed(axes)
    k_coord = torch.randint(-5, 40, (300, axes), generator=gen, dtype=torch.int32)
    lo = torch.randint(-20, 50, (200, axes), generator=gen, dtype=torch.int32)
    hi = lo + torch.randint(-3, 30, (200, axes), generator=gen, dtype=torch.int32)  # some lo > hi: empty
    lo[0], hi[0] = 100, 200  # misses every key
    box = BoxMask(lo, hi, k_coord)
    packed = box.packed()
    assert packed is box.packed()  # cached
    assert packed.q_lo.dtype == packed.q_hi.dtype == packed.k_coord.dtype == torch.int32
    expected = box.dense()
    assert 0 < int(expected.sum()) < expected.numel() and not expected[0].any()
    assert torch.equal(_swar_visible(packed), expected)


def test_packed_box_refuses_coordinates_wider_than_31_bits():
    coords = torch.tensor([[0, 0, 0], [2000, 2000, 2000]], dtype=torch.int32)  # 3 x (11 + 1) bits
    assert BoxMask(coords, coords, coords).packed() is None
    assert BoxMask(coords[:, :2], coords[:, :2], coords[:, :2]).packed() is not None
