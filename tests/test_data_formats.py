"""Every data format of ``load_eval_set``, on tiny data made here, plus the built-ins and row selection."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustbench_cli.core.data import EvalSet, load_eval_set
from robustbench_cli.core.errors import DataError

RNG = np.random.default_rng(1234)


def u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def check_loaded(d: EvalSet, x_nchw: np.ndarray, y) -> None:
    """The loaded set holds exactly these pixels (float32 in [0,1], channels first) and labels, in source order."""
    assert d.x.dtype == np.float32 and d.y.dtype == np.int64 and d.ids.dtype == np.int64
    assert d.x.shape == x_nchw.shape
    np.testing.assert_array_equal(d.x, x_nchw.astype(np.float32))
    np.testing.assert_array_equal(d.y, np.asarray(y, dtype=np.int64))
    np.testing.assert_array_equal(d.ids, np.arange(len(y)))
    assert len(d) == len(y)
    assert d.sample_shape == x_nchw.shape[1:]
    assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0


# --- .npz -----------------------------------------------------------------------------------------
# (shape stored, function from the stored array to the expected channels-first array)
NPZ_SHAPES = {
    "nhwc-rgb": ((5, 6, 7, 3), lambda a: a.transpose(0, 3, 1, 2)),
    "nhwc-grey": ((5, 6, 7, 1), lambda a: a.transpose(0, 3, 1, 2)),
    "nchw-rgb": ((5, 3, 6, 7), lambda a: a),
    "nchw-grey": ((5, 1, 6, 7), lambda a: a),
    "nhw": ((5, 6, 7), lambda a: a[:, None]),
    "flat": ((5, 42), lambda a: a),
}


@pytest.mark.parametrize("kind", ["uint8", "float"])
@pytest.mark.parametrize("layout", list(NPZ_SHAPES))
def test_npz_layouts_and_scales(tmp_path, kind, layout):
    shape, to_nchw = NPZ_SHAPES[layout]
    raw = u8(*shape)
    if kind == "uint8":
        stored, expected = raw, to_nchw(raw).astype(np.float32) / np.float32(255)
    else:
        stored = (raw / 255.0).astype(np.float32)
        expected = to_nchw(stored)
    y = np.array([3, 1, 4, 1, 5])
    np.savez(tmp_path / "d.npz", x=stored, y=y)
    d = load_eval_set(str(tmp_path / "d.npz"))
    check_loaded(d, expected, y)
    assert d.name == str(tmp_path / "d.npz")
    assert d.describe()["n"] == 5 and d.describe()["shape"] == list(expected.shape[1:])


def test_npz_float64_and_one_hot_labels(tmp_path):
    x = RNG.uniform(0, 1, (4, 1, 5, 5))  # float64 in [0,1]
    y = np.eye(3)[[2, 0, 1, 2]]  # one-hot
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_eval_set(str(tmp_path / "d.npz"))
    check_loaded(d, x.astype(np.float32), [2, 0, 1, 2])


def test_npz_data_layout_override(tmp_path):
    # (N, 3, 5, 3) is ambiguous; --data-layout decides
    raw = u8(2, 3, 5, 3)
    np.savez(tmp_path / "d.npz", x=raw, y=[0, 1])
    as_nhwc = load_eval_set(str(tmp_path / "d.npz"), layout="nhwc")
    as_nchw = load_eval_set(str(tmp_path / "d.npz"), layout="nchw")
    np.testing.assert_array_equal(as_nhwc.x, raw.transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(as_nchw.x, raw / np.float32(255))
    assert as_nhwc.sample_shape == (3, 3, 5) and as_nchw.sample_shape == (3, 5, 3)


def test_npz_data_scale(tmp_path):
    x = RNG.uniform(0, 255, (3, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=[0, 1, 2])
    with pytest.raises(DataError, match="data-scale"):
        load_eval_set(str(tmp_path / "d.npz"))
    d = load_eval_set(str(tmp_path / "d.npz"), scale=255)
    np.testing.assert_allclose(d.x, x / 255, rtol=1e-6)


# --- image folders --------------------------------------------------------------------------------
def _write_folder(root: Path, modes: dict[str, list[str]]) -> tuple[list[np.ndarray], list[int]]:
    """One sub-folder per class (sorted names give the labels); returns the arrays written, in load order."""
    arrays, labels = [], []
    for k, cls in enumerate(sorted(modes)):
        (root / cls).mkdir(parents=True)
        for i, mode in enumerate(modes[cls]):
            a = u8(6, 5) if mode == "L" else u8(6, 5, 3)
            Image.fromarray(a, mode).save(root / cls / f"img{i}.png")
            arrays.append(a)
            labels.append(k)
    return arrays, labels


def test_image_folder_grey(tmp_path):
    arrays, labels = _write_folder(tmp_path / "grey", {"b_cat": ["L", "L"], "a_ant": ["L", "L", "L"]})
    (tmp_path / "grey" / "a_ant" / "README.txt").write_text("not an image")  # ignored
    d = load_eval_set(str(tmp_path / "grey"))
    check_loaded(d, np.stack(arrays)[:, None] / np.float32(255), labels)
    assert labels == [0, 0, 0, 1, 1]
    assert d.source["classes"] == ["a_ant", "b_cat"]


def test_image_folder_rgb(tmp_path):
    arrays, labels = _write_folder(tmp_path / "rgb", {"0": ["RGB"] * 2, "1": ["RGB"], "2": ["RGB"] * 2})
    d = load_eval_set(str(tmp_path / "rgb"))
    check_loaded(d, np.stack(arrays).transpose(0, 3, 1, 2) / np.float32(255), labels)
    assert d.source["classes"] == ["0", "1", "2"]


def test_image_folder_mixed_grey_and_rgb_becomes_rgb(tmp_path):
    arrays, labels = _write_folder(tmp_path / "mix", {"a": ["L", "RGB"], "b": ["RGB", "L"]})
    d = load_eval_set(str(tmp_path / "mix"))
    assert d.x.shape == (4, 3, 6, 5)
    for i, a in enumerate(arrays):
        rgb = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a
        np.testing.assert_array_equal(d.x[i], rgb.transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(d.y, labels)


def test_image_folder_sizes_must_agree(tmp_path):
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(u8(6, 5), "L").save(tmp_path / "f" / "a" / "1.png")
    Image.fromarray(u8(7, 5), "L").save(tmp_path / "f" / "a" / "2.png")
    with pytest.raises(DataError, match="differ in size"):
        load_eval_set(str(tmp_path / "f"))


# --- MNIST IDX ------------------------------------------------------------------------------------
def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    magic = 0x00000803 if arr.ndim == 3 else 0x00000801
    raw = struct.pack(">I", magic) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_idx(tmp_path, gz):
    x, y = u8(7, 28, 28), RNG.integers(0, 10, 7).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y, gz)
    if gz:
        assert (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"
    d = load_eval_set(str(tmp_path / f"t10k-images-idx3-ubyte{suffix}"))
    check_loaded(d, x[:, None] / np.float32(255), y)


def test_mnist_idx_non_square(tmp_path):
    x, y = u8(3, 4, 9), np.array([1, 2, 3], np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", x, False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y, False)
    d = load_eval_set(str(tmp_path / "train-images-idx3-ubyte"))
    check_loaded(d, x[:, None] / np.float32(255), y)


# --- CIFAR-10 python batches ----------------------------------------------------------------------
def cifar_batch(n: int = 6) -> tuple[dict, np.ndarray, list[int]]:
    data = u8(n, 3072)
    labels = [int(v) for v in RNG.integers(0, 10, n)]
    return {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}, data, labels


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batch_file(tmp_path, protocol):
    d_in, data, labels = cifar_batch()
    (tmp_path / "test_batch").write_bytes(pickle.dumps(d_in, protocol=protocol))
    d = load_eval_set(str(tmp_path / "test_batch"))
    check_loaded(d, data.reshape(-1, 3, 32, 32) / np.float32(255), labels)


def test_cifar_folder_with_test_batch(tmp_path):
    d_in, data, labels = cifar_batch(4)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(d_in, f)
    d = load_eval_set(str(folder))
    check_loaded(d, data.reshape(-1, 3, 32, 32) / np.float32(255), labels)


def test_cifar_data_batch_name_and_numpy_labels(tmp_path):
    d_in, data, labels = cifar_batch(3)
    d_in[b"labels"] = np.asarray(labels, dtype=np.int64)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(d_in))
    d = load_eval_set(str(tmp_path / "data_batch_1"))
    check_loaded(d, data.reshape(-1, 3, 32, 32) / np.float32(255), labels)


class _SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _OpenPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [_SystemPayload, _OpenPayload], ids=["os.system", "open"])
@pytest.mark.parametrize("where", ["top", "labels", "data"])
def test_cifar_malicious_pickle_is_refused(tmp_path, payload, where):
    # The payload is real: plain pickle.loads runs it and creates the control file.
    control = tmp_path / "control-created"
    f = pickle.loads(pickle.dumps(payload(control)))
    if hasattr(f, "close"):
        f.close()
    assert control.exists()

    marker = tmp_path / "pwned"
    d_in, _, _ = cifar_batch(2)
    if where == "top":
        obj = payload(marker)
    else:
        obj = dict(d_in)
        obj[b"labels" if where == "labels" else b"data"] = payload(marker)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match="refusing|not a CIFAR"):
        load_eval_set(str(tmp_path / "test_batch"))
    assert not marker.exists()
    # the folder form goes through the same guarded unpickler
    with pytest.raises(DataError):
        load_eval_set(str(tmp_path))
    assert not marker.exists()


# --- built-ins --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_sets():
    return {name: load_eval_set(name) for name in ("mnist", "mnist:test", "mnist:train")}


def test_builtin_digits():
    d = load_eval_set("digits")
    assert len(d) == 1797 and d.sample_shape == (1, 8, 8)
    assert d.x.dtype == np.float32 and float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    assert set(np.unique(d.y)) == set(range(10))
    np.testing.assert_array_equal(d.ids, np.arange(1797))


def test_builtin_mnist_sizes(mnist_sets):
    for name, size in (("mnist", 5000), ("mnist:test", 1000), ("mnist:train", 4000)):
        d = mnist_sets[name]
        assert len(d) == size, name
        assert d.sample_shape == (1, 28, 28) and d.x.dtype == np.float32
        assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0 and float(d.x.max()) > 0.9
        assert d.name == name


def test_builtin_mnist_split_is_disjoint_and_balanced(mnist_sets):
    rows = {name: [r.tobytes() for r in d.x] for name, d in mnist_sets.items()}
    train, test, full = set(rows["mnist:train"]), set(rows["mnist:test"]), set(rows["mnist"])
    assert len(train) == 4000 and len(test) == 1000  # no duplicates inside a split
    assert not (train & test)
    assert train | test == full  # together they are exactly the full sample
    np.testing.assert_array_equal(np.bincount(mnist_sets["mnist:test"].y, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(mnist_sets["mnist:train"].y, minlength=10), [400] * 10)
    assert mnist_sets["mnist:test"].sha256 != mnist_sets["mnist:train"].sha256


# --- selection and hashing ----------------------------------------------------------------------------
@pytest.fixture
def ten_rows(tmp_path) -> str:
    x = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 3, 3), np.uint8) * 20  # row i is 20*i
    np.savez(tmp_path / "ten.npz", x=x, y=np.arange(10) % 4)
    return str(tmp_path / "ten.npz")


def test_n_and_offset(ten_rows):
    full = load_eval_set(ten_rows)
    d = load_eval_set(ten_rows, n=3, offset=4)
    np.testing.assert_array_equal(d.ids, [4, 5, 6])
    np.testing.assert_array_equal(d.x, full.x[4:7])
    np.testing.assert_array_equal(d.y, full.y[4:7])
    np.testing.assert_allclose(d.x[:, 0, 0, 0], np.array([4, 5, 6]) * 20 / 255, rtol=1e-6)
    assert d.source["total"] == 10 and d.source["offset"] == 4
    tail = load_eval_set(ten_rows, n=5, offset=8)  # n past the end keeps what is there
    np.testing.assert_array_equal(tail.ids, [8, 9])
    assert len(load_eval_set(ten_rows, offset=7)) == 3
    with pytest.raises(DataError, match="past the end"):
        load_eval_set(ten_rows, offset=10)
    with pytest.raises(DataError):
        load_eval_set(ten_rows, n=0)
    with pytest.raises(DataError):
        load_eval_set(ten_rows, offset=-1)


def test_shuffle_is_seeded_and_ids_are_source_rows(ten_rows):
    full = load_eval_set(ten_rows)
    a = load_eval_set(ten_rows, shuffle=True, seed=7, n=6, offset=1)
    b = load_eval_set(ten_rows, shuffle=True, seed=7, n=6, offset=1)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.sha256 == b.sha256
    np.testing.assert_array_equal(a.x, full.x[a.ids])
    np.testing.assert_array_equal(a.y, full.y[a.ids])
    # row i was written as 20*i: the ids name the source rows
    np.testing.assert_allclose(a.x[:, 0, 0, 0] * 255 / 20, a.ids, atol=1e-4)
    whole = load_eval_set(ten_rows, shuffle=True, seed=7)
    assert sorted(whole.ids.tolist()) == list(range(10))
    np.testing.assert_array_equal(a.ids, whole.ids[1:7])  # shuffle first, then offset/n
    assert whole.ids.tolist() != list(range(10))
    others = [load_eval_set(ten_rows, shuffle=True, seed=s).ids.tolist() for s in (8, 9)]
    assert any(o != whole.ids.tolist() for o in others)
    assert a.source["shuffle"] is True


def test_shuffle_on_builtin_digits():
    full = load_eval_set("digits")
    d = load_eval_set("digits", shuffle=True, seed=3, n=20, offset=5)
    assert len(d) == 20 and len(set(d.ids.tolist())) == 20
    np.testing.assert_array_equal(d.x, full.x[d.ids])
    np.testing.assert_array_equal(d.y, full.y[d.ids])


def test_sha256_tracks_pixels_and_labels(tmp_path, ten_rows):
    base = load_eval_set(ten_rows)
    assert base.sha256 == load_eval_set(ten_rows).sha256
    assert len(base.sha256) == 64 and base.describe()["sha256"] == base.sha256
    with np.load(ten_rows) as z:
        x, y = z["x"].copy(), z["y"].copy()
    x2 = x.copy()
    x2[3, 0, 1, 1] += 1  # one pixel, one grey level
    np.savez(tmp_path / "pix.npz", x=x2, y=y)
    y2 = y.copy()
    y2[0] = 3
    np.savez(tmp_path / "lab.npz", x=x, y=y2)
    hashes = {base.sha256, load_eval_set(str(tmp_path / "pix.npz")).sha256, load_eval_set(str(tmp_path / "lab.npz")).sha256}
    assert len(hashes) == 3
    # the hash covers exactly the rows evaluated
    assert load_eval_set(ten_rows, n=9).sha256 != base.sha256
    assert load_eval_set(ten_rows, n=4, offset=0).sha256 != load_eval_set(ten_rows, n=4, offset=1).sha256


# --- bad data read as good (issue 22) ---------------------------------------------------------------------------------
def test_16_bit_png_folders_keep_their_depth(tmp_path):
    from PIL import Image

    from robustbench_cli.core.data import load_eval_set

    values = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        Image.fromarray((values + k).astype("<u2")).save(tmp_path / str(k) / "a.png")  # Pillow picks I;16
    data = load_eval_set(str(tmp_path))
    assert data.x.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(data.x[0, 0], values / 65535.0, atol=1e-6)  # not clipped to 0/1 pixels
    assert 0.0 < data.x[0, 0, 0, 1] < 0.02 and 0.49 < data.x[0, 0, 1, 0] < 0.51


def test_small_files_that_unpack_to_gigabytes_are_refused_before_allocating(tmp_path, monkeypatch):
    import gzip
    import pickle

    from robustbench_cli.core.data import load_eval_set
    from robustbench_cli.core.errors import DataError

    monkeypatch.setenv("ROBUST_MAX_DATA_BYTES", "100000")
    header = bytes([0, 0, 8, 3]) + (1000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "bomb-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1000 * 784)))
    (tmp_path / "bomb-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (1000).to_bytes(4, "big")
                                                                       + bytes(1000)))
    with pytest.raises(DataError, match="over the limit of 100,000.*ROBUST_MAX_DATA_BYTES"):
        load_eval_set(str(tmp_path / "bomb-images-idx3-ubyte.gz"))
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((200, 1, 28, 28), np.uint8), y=np.zeros(200, np.int64))
    with pytest.raises(DataError, match="unpacks to 156,928 bytes, over the limit"):
        load_eval_set(str(tmp_path / "big.npz"))
    # a CIFAR batch whose data is a list of one bytes object referenced many times (pickle memo): refused
    row = bytes(3072)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": [row] * 1000, b"labels": [0] * 1000}))
    with pytest.raises(DataError, match="must be a uint8 array"):
        load_eval_set(str(tmp_path / "test_batch"))


def test_the_decoded_mnist_is_cached_and_a_damaged_cache_is_decoded_again(tmp_path, monkeypatch):
    from robustbench_cli.core.data import DataSpec

    monkeypatch.setenv("ROBUST_CACHE_DIR", "off")
    plain = DataSpec("mnist:test").load()
    monkeypatch.setenv("ROBUST_CACHE_DIR", str(tmp_path))
    first = DataSpec("mnist:test").load()  # decodes, writes the cache
    (cached,) = tmp_path.glob("mnist_5k-*.npz")
    second = DataSpec("mnist:test").load()  # from the cache
    assert plain.sha256 == first.sha256 == second.sha256
    cached.write_bytes(b"not an npz")  # damaged: decoded again and rewritten, never trusted
    third = DataSpec("mnist:test").load()
    assert third.sha256 == plain.sha256 and cached.stat().st_size > 1000
