"""Super-resolution data (`zoo.data.sr`): MATLAB-style bicubic imresize checked against two independent
formulations (Pillow's float bicubic resampling, the same kernel with border-renormalised weights, on interior
pixels; a per-pixel loop over MATLAB's definition on whole small images), BasicSR's pairing of file names, paired
crops and augmentation, and the recipe checks of the SR keys."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zoo.data.sr import SRPairs, bicubic_lr, bicubic_random_crop, imresize, paired_paths, paired_random_crop, \
    skimage_photos


def _pil_resize(img: torch.Tensor, size_hw: tuple[int, int]) -> np.ndarray:
    """Pillow's bicubic on float ('F') images, channel by channel: a = -0.5, antialiasing support, no rounding."""
    return np.stack([np.asarray(Image.fromarray(c.numpy().astype(np.float32), mode="F").resize(
        (size_hw[1], size_hw[0]), Image.Resampling.BICUBIC)) for c in img])


def _matlab_loop(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB imresize(img, scale, 'bicubic') for one 2-d channel, pixel by pixel in plain Python."""
    def keys(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
        if x <= 2:
            return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
        return 0.0

    def axis(n_in: int) -> list[list[tuple[int, float]]]:
        n_out = math.ceil(n_in * scale)
        k = 1 / scale if scale < 1 else 1.0  # kernel stretch (antialiasing when shrinking)
        taps = []
        for x in range(1, n_out + 1):
            u = x / scale + 0.5 * (1 - 1 / scale)
            row, total = [], 0.0
            for j in range(math.floor(u - 2 * k), math.ceil(u + 2 * k) + 1):
                w = keys((u - j) / k) / k
                src = j - 1
                while not 0 <= src < n_in:  # symmetric extension, edge pixel repeated
                    src = -src - 1 if src < 0 else 2 * n_in - 1 - src
                row.append((src, w))
                total += w
            taps.append([(s, w / total) for s, w in row])
        return taps

    rows, cols = axis(img.shape[0]), axis(img.shape[1])
    tmp = np.array([[sum(w * img[s, c] for s, w in r) for c in range(img.shape[1])] for r in rows])
    return np.array([[sum(w * tmp[r, s] for s, w in col) for col in cols] for r in range(len(rows))])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_matches_pillow_inside(scale):
    img = skimage_photos(["chelsea"])[0][:, :288, :444]
    h, w = 288 // scale, 444 // scale
    ours = imresize(img, 1 / scale).numpy()
    ref = _pil_resize(img, (h, w))
    assert ours.shape == ref.shape == (3, h, w)
    m = 3  # LR pixels whose kernel reaches over the border (Pillow renormalises, MATLAB mirrors)
    np.testing.assert_allclose(ours[:, m:-m, m:-m], ref[:, m:-m, m:-m], atol=2e-6, rtol=0)
    assert np.abs(ours - ref).max() > 1e-4  # the borders do differ: the comparison is not vacuous
    up = imresize(img[:, :60, :80], scale).numpy()  # upscaling: the plain kernel
    np.testing.assert_allclose(up[:, 3 * scale:-3 * scale, 3 * scale:-3 * scale],
                               _pil_resize(img[:, :60, :80], (60 * scale, 80 * scale))[
                                   :, 3 * scale:-3 * scale, 3 * scale:-3 * scale], atol=2e-6, rtol=0)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2.0, 0.7])
def test_imresize_matches_matlab_definition(scale):
    rng = np.random.default_rng(0)
    img = rng.random((13, 17))
    ours = imresize(torch.from_numpy(img), scale).double().numpy()
    ref = _matlab_loop(img, scale)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)  # float32 output


def test_imresize_known_values():
    # a constant stays constant, a ramp stays a ramp (cubic convolution reproduces linear functions) inside
    assert torch.allclose(imresize(torch.full((3, 12, 12), 0.25), 1 / 2), torch.full((3, 6, 6), 0.25))
    ramp = torch.arange(24, dtype=torch.float64).repeat(24, 1)
    out = imresize(ramp, 1 / 2).double()
    # output pixel x (1-based) sits at input coordinate 2x - 0.5, i.e. 0-based 2x - 1.5 -> value 2(x - 1) + 0.5
    np.testing.assert_allclose(out[4, 2:-2].numpy(), (2 * np.arange(2, 10) + 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="scale must be positive"):
        imresize(ramp, 0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_crop_is_a_crop_of_the_full_pair(scale):
    img = skimage_photos(["rocket"])[0]
    lr_full, hr_full = bicubic_lr(img, scale, quantize=False)
    assert hr_full.shape[-2] % scale == 0 and hr_full.shape[-1] % scale == 0
    for seed in range(4):
        random.seed(seed)
        a = bicubic_random_crop(img, 16 * scale, scale)
        random.seed(seed)
        b = paired_random_crop(lr_full, hr_full, 16 * scale, scale)
        assert a[0].shape == (3, 16, 16) and a[1].shape == (3, 16 * scale, 16 * scale)
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
        assert torch.equal(a[1], b[1])


def test_paired_crop_and_augment_keep_pairs_aligned():
    hr = torch.rand(3, 40, 56)
    lr = F.avg_pool2d(hr[None], 4)[0]  # commutes with flips and transposes: the pair stays exact
    seen = set()
    for seed in range(24):
        random.seed(seed)
        a, b = paired_random_crop(lr, hr, 16, 4)
        assert a.shape == (3, 4, 4) and b.shape == (3, 16, 16)
        torch.testing.assert_close(a, F.avg_pool2d(b[None], 4)[0])
        seen.add(bool(torch.equal(b, b.flip(-1))))
    random.seed(0)
    a, b = paired_random_crop(lr, hr, 16, 4, use_hflip=False, use_rot=False)
    random.seed(0)
    top, left = random.randint(0, 10 - 4), random.randint(0, 14 - 4)
    assert torch.equal(b, hr[:, top * 4:top * 4 + 16, left * 4:left * 4 + 16])
    with pytest.raises(ValueError, match="smaller than the LR patch"):
        paired_random_crop(lr, hr, 48, 4)
    with pytest.raises(ValueError, match="is not scale 4"):
        paired_random_crop(lr[:, :-1], hr, 16, 4)


def _save(path, arr):
    Image.fromarray(arr).save(path)


def test_paired_folders(tmp_path):
    rng = np.random.default_rng(0)
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    hr_dir.mkdir()
    lr_dir.mkdir()
    for name in ("0001", "0002"):
        hr = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        _save(hr_dir / f"{name}.png", hr)
        _save(lr_dir / f"{name}x2.png", hr[::2, ::2].copy())
    pairs = paired_paths(hr_dir, lr_dir, "{}x2")
    assert [(h.name, lr.name) for h, lr in pairs] == [("0001.png", "0001x2.png"), ("0002.png", "0002x2.png")]
    with pytest.raises(FileNotFoundError, match="has no LR image"):
        paired_paths(hr_dir, lr_dir, "{}")
    val = SRPairs(2, hr_dir=hr_dir, lr_dir=lr_dir, filename_tmpl="{}x2")
    lr, hr = val[1]
    assert lr.shape == (3, 16, 24) and hr.shape == (3, 32, 48)
    assert torch.equal(lr, hr[:, ::2, ::2])
    train = SRPairs(2, hr_dir=hr_dir, lr_dir=lr_dir, filename_tmpl="{}x2", gt_size=16, length=7)
    assert len(train) == 7
    lr, hr = train[6]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16)
    bic = SRPairs(2, hr_dir=hr_dir)  # HR only: 8-bit bicubic LR for validation
    lr, hr = bic[0]
    assert lr.shape == (3, 16, 24)
    assert torch.equal(lr, (lr * 255).round() / 255)


def test_skimage_validation_pairs():
    ds = SRPairs(3, images=skimage_photos(["chelsea"]), names=["chelsea"])
    lr, hr = ds[0]
    assert hr.shape == (3, 300, 450) and lr.shape == (3, 100, 150)  # 451 cropped to a multiple of 3
    with pytest.raises(ValueError, match="unknown scikit-image photograph"):
        skimage_photos(["moon"])


def test_sr_recipe_checks():
    from zoo.engine.config import RecipeError, recipe_from_dict

    base = {"task": "sr", "data": {"name": "sr_skimage"}, "sr": {"scale": 2, "gt_size": 64}}
    r = recipe_from_dict(base)
    assert r.sr.scale == 2 and r.sr.skimage_val == ("chelsea", "coffee")
    with pytest.raises(RecipeError, match="unknown recipe key 'sr.gtsize'.*did you mean 'sr.gt_size'.*valid keys"):
        recipe_from_dict({**base, "sr": {"gtsize": 64}})
    with pytest.raises(RecipeError, match="'data.name'.*one of sr_folder, sr_skimage"):
        recipe_from_dict({**base, "data": {"name": "digits"}})
    with pytest.raises(RecipeError, match="'sr.gt_size'.*multiple of sr.scale"):
        recipe_from_dict({**base, "sr": {"scale": 3, "gt_size": 64}})
    with pytest.raises(RecipeError, match="'sr.train_hr'"):
        recipe_from_dict({**base, "data": {"name": "sr_folder"}})
    with pytest.raises(RecipeError, match="'sr.skimage_val'.*not in sr.skimage_train"):
        recipe_from_dict({**base, "sr": {"skimage_val": ["astronaut"]}})
    with pytest.raises(RecipeError, match="'sched.milestones'.*set when"):
        recipe_from_dict({**base, "sched": {"sched": "multistep"}})
    with pytest.raises(RecipeError, match="'sched.milestones'.*strictly increasing"):
        recipe_from_dict({**base, "sched": {"sched": "multistep", "milestones": [5, 3]}})
    with pytest.raises(RecipeError, match="'data.name'.*not an SR data set"):
        recipe_from_dict({"data": {"name": "sr_skimage"}})
