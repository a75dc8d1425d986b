import torch
from torch.nn import functional as F

from pytest_gan_privacy.similarity import nearest_neighbours


def test_blockwise_top_k_equals_the_full_matrix():
    g = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(37, 16, generator=g), dim=1)
    refs = F.normalize(torch.randn(101, 16, generator=g), dim=1)
    values, indices = nearest_neighbours(queries, refs, k=4, query_block=8, reference_block=10)
    full_values, full_indices = (queries @ refs.T).topk(4, dim=1)
    assert torch.allclose(values, full_values, atol=1e-6)
    assert torch.equal(indices, full_indices)


def test_k_larger_than_references_is_clipped():
    refs = F.normalize(torch.randn(3, 4), dim=1)
    values, indices = nearest_neighbours(refs, refs, k=10)
    assert values.shape == (3, 3)
    assert torch.equal(indices[:, 0], torch.arange(3))
