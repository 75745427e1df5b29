from __future__ import annotations

import pytest
import torch

from mla import FeatureSpec, FusionOutput, HeadInput, MLAConfigError, MLAInputError, ModalFeatures, create_head
from mla.heads.sequence import SequenceHead
from mla.text import EOS, PAD, VOCAB_SIZE

SPECS = {
    "image": FeatureSpec(vector_dim=32, level_channels=(8, 16, 32)),
    "text": FeatureSpec(vector_dim=12, token_dim=12),
}


def head_input(batch: int = 2, size: int = 64, tokens: torch.Tensor | None = None) -> HeadInput:
    levels = tuple(torch.randn(batch, 16, size // s, size // s) for s in (4, 8, 16))
    fused = FusionOutput(vector=torch.randn(batch, 16), weights=torch.full((batch, 2), 0.5), levels=levels)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:batch]
    text = ModalFeatures(vector=torch.randn(batch, 12), tokens=torch.randn(batch, 5, 12), token_mask=mask)
    return HeadInput(fused=fused, features={"text": text}, image_size=(size, size), tokens=tokens)


def test_segmentation_is_at_reference_resolution() -> None:
    head = create_head("segmentation", width=16, modalities=SPECS)
    logits = head(head_input(size=64))
    assert logits.shape == (2, 1, 64, 64)
    # the classifier bias starts at logit(0.01): a rare foreground
    assert torch.sigmoid(head.classifier.bias).item() == pytest.approx(0.01)


def test_segmentation_non_square() -> None:
    head = create_head("segmentation", width=16, modalities=SPECS, classes=3)
    fused = FusionOutput(
        vector=torch.randn(1, 16),
        weights=torch.ones(1, 1),
        levels=(torch.randn(1, 16, 32, 16), torch.randn(1, 16, 16, 8), torch.randn(1, 16, 8, 4)),
    )
    assert head(HeadInput(fused=fused, image_size=(128, 64))).shape == (1, 3, 128, 64)


def test_shuffle_decoder_gives_each_pixel_of_a_cell_its_own_logit() -> None:
    head = create_head("segmentation", width=16, modalities=SPECS, decoder="shuffle", classes=2)
    logits = head(head_input(size=64))
    assert logits.shape == (2, 2, 64, 64)
    assert torch.sigmoid(head.classifier.bias).max().item() == pytest.approx(0.01)
    with torch.no_grad():  # one cell's 16 channels of class 0 land on its 4x4 pixels, one each
        head.classifier.weight.zero_()
        head.classifier.bias.copy_(torch.arange(32, dtype=torch.float32))
    block = head(head_input(size=64))[0, 0, :4, :4]
    assert torch.equal(block, torch.arange(16, dtype=torch.float32).view(4, 4))
    assert not any(isinstance(m, torch.nn.Upsample) for m in head.modules()) and not hasattr(head, "up_full")


def test_unknown_decoder_lists_the_choices() -> None:
    with pytest.raises(MLAConfigError, match="bilinear, shuffle"):
        create_head("segmentation", width=16, modalities=SPECS, decoder="deconv")


def test_segmentation_without_levels_explains() -> None:
    head = create_head("segmentation", width=16, modalities=SPECS)
    fused = FusionOutput(vector=torch.randn(1, 16), weights=torch.ones(1, 1))
    with pytest.raises(MLAInputError, match="needs an image-like modality"):
        head(HeadInput(fused=fused))


def test_classification_shape() -> None:
    assert create_head("classification", width=16, num_classes=5)(head_input()).shape == (2, 5)


def test_answer_uses_question_tokens() -> None:
    head = create_head("answer", width=16, modalities=SPECS, num_answers=9, heads=2).eval()
    inputs = head_input()
    logits = head(inputs)
    assert logits.shape == (2, 9)
    # without the question the answer changes, and still is finite
    blind = head(HeadInput(fused=inputs.fused, image_size=inputs.image_size))
    assert torch.isfinite(blind).all()
    assert not torch.allclose(logits, blind)


def test_answer_needs_a_token_modality() -> None:
    with pytest.raises(MLAConfigError, match="question modality with tokens"):
        create_head("answer", width=16, modalities={"image": SPECS["image"]})


def test_relation_answer_reads_where_things_are() -> None:
    head = create_head("answer", width=16, modalities=SPECS, num_answers=9, heads=2, reasoning="relation").eval()
    assert head.needs_levels and not create_head("answer", width=16, modalities=SPECS).needs_levels
    inputs = head_input(batch=1)
    fine, mid, coarse = inputs.fused.levels or ()
    here = torch.zeros_like(mid)  # (1, 16, 8, 8): one "object" feature, every other cell empty
    here[0, :, 1, 1] = 3.0
    there = torch.zeros_like(mid)
    there[0, :, 6, 5] = 3.0

    def answer(*levels: torch.Tensor) -> torch.Tensor:
        fused = FusionOutput(vector=inputs.fused.vector, weights=inputs.fused.weights, levels=levels)
        return head(HeadInput(fused=fused, features=inputs.features))

    found = answer(fine, here, coarse)
    assert found.shape == (1, 9) and torch.isfinite(found).all()
    assert not torch.allclose(found, answer(fine, there, coarse))  # the same content elsewhere: another answer
    assert torch.allclose(found, answer(torch.zeros_like(fine), here, coarse))  # only the mid level is read


def test_relation_reasoner_ignores_cell_order_when_coordinates_travel_with_cells() -> None:
    from mla.heads.relation import RelationReasoner

    reasoner = RelationReasoner(width=6, question_dim=4, hidden=8, out_dim=5).eval()
    level, question = torch.randn(2, 6, 3, 3), torch.randn(2, 4)
    flipped = level.flip(2).flip(3)  # the same cells at mirrored coordinates
    assert not torch.allclose(reasoner(level, question), reasoner(flipped, question))
    left = reasoner.left.weight[:, -2:].detach().clone()
    with torch.no_grad():  # without coordinates, pairs are a set: order cannot matter
        reasoner.left.weight[:, -2:] = 0
        reasoner.right.weight[:, -2:] = 0
    assert torch.allclose(reasoner(level, question), reasoner(flipped, question), atol=1e-6)
    assert left.abs().sum() > 0


def test_answer_refuses_unknown_reasoning() -> None:
    with pytest.raises(MLAConfigError, match="reasoning must be"):
        create_head("answer", width=16, modalities=SPECS, reasoning="magic")


def test_sequence_teacher_forcing_and_generation() -> None:
    head = create_head("sequence", width=16, modalities=SPECS, depth=1, heads=2, max_len=8)
    assert isinstance(head, SequenceHead)
    tokens = torch.randint(4, VOCAB_SIZE, (2, 6))
    logits = head(head_input(tokens=tokens))
    assert logits.shape == (2, 6, VOCAB_SIZE)
    head.eval()
    ids = head.generate(head_input(), max_len=5)
    assert ids.dtype == torch.long
    assert ids.shape[0] == 2 and 1 <= ids.shape[1] <= 5
    steps = head(head_input())  # no tokens: the greedy steps' logits
    assert steps.shape[0] == 2 and steps.shape[2] == VOCAB_SIZE


def test_sequence_is_causal() -> None:
    head = create_head("sequence", width=16, modalities=SPECS, depth=1, heads=2, max_len=8).eval()
    inputs = head_input()
    a = torch.randint(4, VOCAB_SIZE, (2, 6))
    b = a.clone()
    b[:, 4:] = torch.randint(4, VOCAB_SIZE, (2, 2))
    la = head(HeadInput(fused=inputs.fused, features=inputs.features, tokens=a))
    lb = head(HeadInput(fused=inputs.fused, features=inputs.features, tokens=b))
    torch.testing.assert_close(la[:, :4], lb[:, :4])


def test_sequence_pads_after_eos() -> None:
    head = create_head("sequence", width=16, modalities=SPECS, depth=1, heads=2, max_len=8).eval()
    with torch.no_grad():
        head.lm_head.bias.fill_(0)
        head.lm_head.bias[EOS] = 100.0  # always says EOS
    ids = head.generate(head_input(), max_len=6)
    assert ids.tolist() == [[EOS], [EOS]]
    assert PAD == 0


def test_sequence_token_checks() -> None:
    head = create_head("sequence", width=16, modalities=SPECS, depth=1, heads=2, max_len=8)
    with pytest.raises(MLAInputError, match="takes 1 to 8"):
        head(head_input(tokens=torch.ones(2, 9, dtype=torch.long)))
    with pytest.raises(MLAInputError, match="integer tensor"):
        head(head_input(tokens=torch.ones(2, 3)))


def test_relation_reasoner_keeps_a_gradient_when_its_last_layer_goes_negative() -> None:
    from mla.heads.relation import RelationReasoner

    reasoner = RelationReasoner(width=6, question_dim=4, hidden=8, out_dim=5)
    with torch.no_grad():  # a last layer that is negative for every input (a dead ReLU, were there one)
        reasoner.f[-1].bias.fill_(-100.0)
    out = reasoner(torch.randn(3, 6, 4, 4), torch.randn(3, 4))
    assert (out < 0).all()
    out.sum().backward()
    assert reasoner.left.weight.grad is not None and reasoner.left.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("anchor", [False, True])
def test_relation_reasoner_learns_which_side_the_asked_cell_is_on(anchor: bool) -> None:
    """Two marked cells; the question names one of them; the answer is its side (left/right)."""
    from mla.heads.relation import RelationReasoner

    torch.manual_seed(0)
    kinds = torch.eye(6)[:2] * 3.0  # two cell contents, as "red" and "blue"

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        level = torch.zeros(size, 6, 4, 4)
        cells = torch.stack([torch.randperm(16)[:2] for _ in range(size)])  # (B, 2) distinct cells
        rows = torch.arange(size)
        for k in range(2):
            level[rows, :, cells[:, k] // 4, cells[:, k] % 4] = kinds[k]
        asked = torch.randint(0, 2, (size,))
        side = (cells[rows, asked] % 4 >= 2).long()  # column 2 or 3: right
        return level, torch.eye(2)[asked], side

    reasoner = RelationReasoner(width=6, question_dim=2, hidden=32, out_dim=2, anchor=anchor)
    optimizer = torch.optim.Adam(reasoner.parameters(), lr=3e-3)
    for _ in range(300):
        level, question, side = batch(64)
        loss = torch.nn.functional.cross_entropy(reasoner(level, question), side)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    level, question, side = batch(500)
    with torch.no_grad():
        accuracy = (reasoner(level, question).argmax(dim=1) == side).float().mean().item()
    assert accuracy > 0.95


def test_the_anchor_weights_pairs_by_the_cell_the_question_names() -> None:
    from mla.heads.relation import RelationReasoner

    reasoner = RelationReasoner(width=6, question_dim=4, hidden=8, out_dim=5, norm=True, anchor=True).eval()
    assert reasoner.key is not None and reasoner.f[0].in_features == 16  # anchored and plain summaries
    level, question = torch.randn(2, 6, 3, 3), torch.randn(2, 4)
    out = reasoner(level, question)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    other = torch.randn(2, 4)
    with torch.no_grad():  # the question out of the pairs: it still moves the output, through the anchor alone
        reasoner.ask.weight.zero_()
        assert not torch.allclose(reasoner(level, question), reasoner(level, other))
        assert reasoner.query is not None
        reasoner.query.weight.zero_()  # and out of the anchor too: nothing left to move it
        assert torch.allclose(reasoner(level, question), reasoner(level, other))


def test_a_fresh_pointer_adds_nothing_so_a_warm_start_answers_as_before() -> None:
    from mla.heads.pointer import PointerReasoner

    pointer = PointerReasoner((6, 8, 10), question_dim=4, hidden=8, out_dim=5).eval()
    levels = [torch.randn(3, 6, 8, 8), torch.randn(3, 8, 4, 4), torch.randn(3, 10, 2, 2)]
    out = pointer(levels, torch.randn(3, 4))
    assert out.shape == (3, 5) and torch.count_nonzero(out) == 0  # f's last layer starts at zero


def test_a_fresh_glimpse_adds_nothing_and_reads_the_cells_around_the_found_centre() -> None:
    from mla.heads.pointer import PointerReasoner

    pointer = PointerReasoner((6, 8, 10), question_dim=4, hidden=8, out_dim=5, glimpse=3).eval()
    levels = [torch.randn(3, 6, 8, 8), torch.randn(3, 8, 4, 4), torch.randn(3, 10, 2, 2)]
    assert torch.count_nonzero(pointer(levels, torch.randn(3, 4))) == 0  # both last layers start at zero
    cells = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 64).transpose(1, 2)  # (B, N, 1): cell index
    assert pointer.glimpse_in is not None
    pointer.glimpse_in = torch.nn.Identity()
    step = 2.0 / 7  # one cell of an 8 × 8 grid in [-1, 1] units
    centre = torch.tensor([[-1 + 3 * step, -1 + 5 * step], [-1 + 6.5 * step, -1 + 2 * step]])  # (x, y)
    window = pointer._window(cells, centre, 8, 8)[..., 0].reshape(2, 3, 3)  # (B, G, G)
    on_cells = torch.tensor([[8 * row + col for col in (2, 3, 4)] for row in (4, 5, 6)], dtype=torch.float32)
    assert torch.allclose(window[0], on_cells)  # centred on cell (row 5, col 3): its 3 × 3 neighbourhood
    halfway = torch.tensor([[64 + 8 * row + col + 0.5 for col in (5, 6)] for row in (1, 2, 3)])
    assert torch.allclose(window[1, :, :2], halfway)  # half a cell off: the mean of two neighbours
    assert torch.allclose(window[1, :, 2], torch.tensor([(64 + 8 * row + 7) / 2 for row in (1, 2, 3)]))  # edge: zeros


def test_the_glimpse_tells_shapes_apart_that_the_softmax_reads_blur() -> None:
    """One 3-cell bar on 8 × 8, across or upright; which? Its cells all look alike, so only their arrangement tells.

    Where the bar is, the pointer is told (as ``inspector vqa train --pointer-supervision`` tells it where
    the asked object is); what it must learn is to read the bar's orientation.
    """
    from mla.heads.pointer import PointerReasoner

    torch.manual_seed(0)
    side = 8

    def batch(size: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        fine = torch.zeros(size, 1, side, side)
        upright = torch.randint(0, 2, (size,))
        row, col = torch.randint(1, side - 1, (2, size))
        for k in (-1, 0, 1):
            fine[torch.arange(size), 0, row + k * upright, col + k * (1 - upright)] = 1.0
        levels = [fine, torch.zeros(size, 1, side // 2, side // 2), torch.zeros(size, 1, side // 4, side // 4)]
        return levels, torch.ones(size, 2), upright

    def accuracy(glimpse: int) -> float:
        pointer = PointerReasoner((1, 1, 1), question_dim=2, hidden=32, out_dim=2, glimpse=glimpse)
        optimizer = torch.optim.Adam(pointer.parameters(), lr=3e-3)
        for _ in range(300):
            levels, question, answer = batch(64)
            loss = torch.nn.functional.cross_entropy(pointer(levels, question), answer)
            assert pointer.maps is not None
            bar = levels[0].flatten(1) / 3  # (B, N): a third on each of the bar's cells
            loss = loss - (bar * torch.log_softmax(pointer.maps[1], dim=1)).sum(dim=1).mean()  # look at the bar
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        pointer.eval()
        levels, question, answer = batch(1000)
        with torch.no_grad():
            return (pointer(levels, question).argmax(dim=1) == answer).float().mean().item()

    assert accuracy(glimpse=0) < 0.7  # the averaged cells and their centre say nothing of the orientation
    assert accuracy(glimpse=5) > 0.95


def test_pointer_learns_the_colour_of_the_closest_and_furthest_object_to_the_named_one() -> None:
    """3-6 one-cell objects of distinct colours on 8 × 8; "closest to red?" → that object's colour.

    The anchor starts from a coarse prior on the named object's 2 × 2 block, as the relation head's
    trained anchor gives it in the VQA model; the pointer must learn the rest: where in the block,
    which objects are candidates, and the sign of distance per question.
    """
    from mla.heads.pointer import PointerReasoner

    torch.manual_seed(0)
    colours, side = 6, 8

    def batch(size: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        fine = torch.zeros(size, colours, side, side)
        cells = torch.stack([torch.randperm(side * side)[:colours] for _ in range(size)])  # a cell per colour
        present = torch.rand(size, colours).argsort(dim=1) < torch.randint(3, colours + 1, (size, 1))
        rows = torch.arange(size)
        for k in range(colours):
            fine[rows[present[:, k]], k, cells[present[:, k], k] // side, cells[present[:, k], k] % side] = 3.0
        named = torch.multinomial(present.float(), 1)[:, 0]
        furthest = torch.randint(0, 2, (size,))
        xy = torch.stack([cells % side, cells // side], dim=2).float()  # (B, colours, 2)
        dist = (xy - xy[rows, named][:, None]).norm(dim=2)
        key = torch.where(furthest[:, None].bool(), -dist, dist).masked_fill(~present, float("inf"))
        key[rows, named] = float("inf")
        ranked = key.sort(dim=1).values
        clear = ranked[:, 1] - ranked[:, 0] > 0.5  # no near ties
        question = torch.cat([torch.eye(colours)[named], torch.eye(2)[furthest]], dim=1)
        prior = torch.zeros(size, side // 2, side // 2)
        prior[rows, cells[rows, named] // side // 2, cells[rows, named] % side // 2] = 6.0
        levels = [fine, torch.nn.functional.avg_pool2d(fine, 2), torch.nn.functional.avg_pool2d(fine, 4)]
        return [level[clear] for level in levels], question[clear], key.argmin(dim=1)[clear], prior[clear]

    pointer = PointerReasoner((colours,) * 3, question_dim=colours + 2, hidden=32, out_dim=colours)
    optimizer = torch.optim.Adam(pointer.parameters(), lr=3e-3)
    for _ in range(1000):
        levels, question, answer, prior = batch(64)
        loss = torch.nn.functional.cross_entropy(pointer(levels, question, prior), answer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pointer.eval()
    levels, question, answer, prior = batch(1000)
    with torch.no_grad():
        accuracy = (pointer(levels, question, prior).argmax(dim=1) == answer).float().mean().item()
    assert accuracy > 0.85  # chance: 1/2 to 1/5 (the named colour is never the answer)
