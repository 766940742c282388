import pytest
import torch

from tripletnet.errors import UserError
from tripletnet.sampler import ClassBalancedBatchSampler


def _labels(counts):
    return torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])


def test_default_batch_holds_every_class_balanced():
    labels = _labels([600, 700, 650, 620, 580, 540, 590, 630, 585, 595])
    sampler = ClassBalancedBatchSampler(labels, batch_size=256, num_batches=20, seed=3)
    batches = sampler.batches(epoch=1)
    assert len(batches) == len(sampler) == 20
    for batch in batches:
        assert len(batch) == 256
        counts = torch.bincount(labels[batch], minlength=10)
        assert (counts > 0).all(), "every class in every batch"
        assert counts.max() - counts.min() <= 1, "classes split as evenly as possible"


def test_images_drawn_without_replacement_within_a_class_pass():
    labels = _labels([300] * 10)
    sampler = ClassBalancedBatchSampler(labels, batch_size=100, num_batches=30, seed=0)
    drawn = torch.cat(sampler.batches(1))
    assert len(drawn) == 3000
    # 30 batches x 10 per class = 300 per class = exactly one pass over each class.
    assert len(torch.unique(drawn)) == 3000


def test_small_batches_choose_a_subset_of_classes_with_two_each():
    labels = _labels([50] * 10)
    sampler = ClassBalancedBatchSampler(labels, batch_size=8, num_batches=50, seed=1)
    for batch in sampler.batches(1):
        counts = torch.bincount(labels[batch], minlength=10)
        assert (counts[counts > 0] >= 2).all()
        assert int((counts > 0).sum()) == 4


def test_reproducible_per_seed_and_epoch():
    labels = _labels([40, 50, 60])
    a = ClassBalancedBatchSampler(labels, 30, 5, seed=7)
    b = ClassBalancedBatchSampler(labels, 30, 5, seed=7)
    c = ClassBalancedBatchSampler(labels, 30, 5, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.batches(2), b.batches(2), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.batches(2), c.batches(2), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.batches(1), a.batches(2), strict=True))


def test_classes_with_one_image_are_never_used_as_anchors_alone():
    labels = _labels([1, 20, 20])
    sampler = ClassBalancedBatchSampler(labels, 10, 4, seed=0)
    for batch in sampler.batches(1):
        assert 0 not in labels[batch].tolist()


@pytest.mark.parametrize("labels,batch", [(_labels([5]), 8), (_labels([1, 1, 9]), 8), (_labels([5, 5]), 3)])
def test_unusable_inputs_are_user_errors(labels, batch):
    with pytest.raises(UserError):
        ClassBalancedBatchSampler(labels, batch, 2, seed=0)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_images_per_class_sets_k_of_p_by_k_with_many_classes(k):
    labels = _labels([16] * 300)
    sampler = ClassBalancedBatchSampler(labels, batch_size=64, num_batches=10, seed=2, images_per_class=k)
    for batch in sampler.batches(1):
        counts = torch.bincount(labels[batch], minlength=300)
        assert int((counts > 0).sum()) == 64 // k
        assert set(counts[counts > 0].tolist()) == {k}


def test_images_per_class_beyond_half_the_batch_is_a_user_error():
    with pytest.raises(UserError, match="half the batch"):
        ClassBalancedBatchSampler(_labels([20] * 10), batch_size=16, num_batches=2, seed=0, images_per_class=9)


def test_classes_smaller_than_their_share_of_a_batch_are_counted_and_their_batches_repeat_images():
    labels = torch.tensor([0] * 3 + [1] * 10 + [2] * 10)  # a batch of 12 over 3 classes takes 4 of each
    sampler = ClassBalancedBatchSampler(labels, batch_size=12, num_batches=1, seed=0)
    assert sampler.images_per_class_in_batch == 4 and sampler.classes_too_small() == 1
    (batch,) = sampler.batches(1)
    of_class_0 = batch[labels[batch] == 0]
    assert len(of_class_0) == 4 and len(set(of_class_0.tolist())) == 3  # one of its three images twice
    assert ClassBalancedBatchSampler(labels[3:], batch_size=12, num_batches=1, seed=0).classes_too_small() == 0
