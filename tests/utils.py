"""Assertions shared by the test folders."""
import torch


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, name: str = "") -> None:
    """Every element within ``atol * max|expected| + rtol * |expected|``; same shape and dtype; no NaN.

    No NaN matters because kernel outputs are NaN-filled before launch (``ATTNZOO_NAN_FILL``): a NaN here is an
    element a kernel never wrote.
    """
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (name, actual.dtype, expected.dtype)
    assert not torch.isnan(actual).any(), f"{name}: NaN in the result (an element the kernel never wrote?)"
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(1e-30)
    err = (actual - expected).abs()
    bound = atol * scale + rtol * expected.abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (
        f"{name}: max error {err.max().item():.3g} (relative to max|expected| {(err.max() / scale).item():.3g}); "
        f"worst element {actual.flatten()[worst].item():.6g} vs {expected.flatten()[worst].item():.6g}"
    )
