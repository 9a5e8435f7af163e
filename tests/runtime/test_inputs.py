"""Triplet discovery and robust image decoding."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.layout import VIEWS
from dfmvr.runtime.inputs import decode_image, discover_triplets, exif_orientation, triplet_from_paths

from .conftest import make_crops, write_triplet


def _touch_images(folder: Path, names, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    img = np.full((4, 4, 3), 128, np.uint8)
    for n in names:
        cv2.imwrite(str(folder / f"{n}{ext}"), img)


def test_named_suffix_and_digit_triplets_are_found_recursively(tmp_path):
    _touch_images(tmp_path / "p1", ["left", "Front", "right"], ".jpg")
    _touch_images(tmp_path / "group" / "p2", ["face_lt", "face_ft", "face_rt"])
    _touch_images(tmp_path / "official", ["a0", "a1", "a2", "b0", "b1", "b2"])
    _touch_images(tmp_path / "broken", ["left", "right"])
    (tmp_path / "official" / "notes.txt").write_text("not an image")
    triplets, problems = discover_triplets([tmp_path])
    by_name = {t.name: t for t in triplets}
    assert sorted(by_name) == ["group/p2", "official/a", "official/b", "p1"]
    assert by_name["p1"].paths["front"].name == "Front.jpg"
    assert [p.name for p in by_name["official/b"].ordered()] == ["b0.png", "b1.png", "b2.png"]
    assert [p.name for p in by_name["group/p2"].ordered()] == ["face_lt.png", "face_ft.png", "face_rt.png"]
    assert len(problems) == 1 and problems[0].name == "broken"
    assert "front" in str(problems[0].error) and "broken" in str(problems[0].error)


def test_a_view_in_an_unread_format_or_a_broken_link_is_named_not_just_missing(tmp_path):
    """A phone's front.heic, a dangling front.png link or a folder named front.png read as "missing view
    ['front']" without a word about the file that is there; all-HEIC triplets were not found at all.
    Folders and files not named like photos (a folder called 0, notes_1.txt) stay out of it."""
    _touch_images(tmp_path / "heic", ["left", "right"])
    (tmp_path / "heic" / "front.heic").write_bytes(b"\x00" * 64)
    _touch_images(tmp_path / "link", ["left", "right"])
    (tmp_path / "link" / "front.png").symlink_to(tmp_path / "nowhere.png")
    _touch_images(tmp_path / "dir", ["left", "right"])
    (tmp_path / "dir" / "front.png").mkdir()
    (tmp_path / "allheic").mkdir()
    for v in VIEWS:
        (tmp_path / "allheic" / f"{v}.HEIC").write_bytes(b"\x00" * 64)
    _touch_images(tmp_path / "fine", VIEWS)
    (tmp_path / "fine" / "0").mkdir()
    (tmp_path / "fine" / "notes_1.txt").write_text("x")
    triplets, problems = discover_triplets([tmp_path])
    assert [t.name for t in triplets] == ["fine"]
    why = {p.name: str(p.error) for p in problems}
    assert sorted(why) == ["allheic", "dir", "heic", "link"]
    assert "front.heic is an image type dfmvr does not read" in why["heic"] and ".png" in why["heic"]
    assert "front.png is a broken link" in why["link"]
    assert "front.png is a folder" in why["dir"]
    assert all(f"{v}.HEIC is an image type" in why["allheic"] for v in VIEWS)
    # an unread file named like a view beside good triplets is not a triplet of its own: nothing fails and the
    # good triplets keep their names (a second group renamed "bob" to "bob/bob")
    _touch_images(tmp_path / "more" / "alice", VIEWS, ".jpg")
    (tmp_path / "more" / "alice" / "IMG_0012.HEIC").write_bytes(b"\x00" * 64)
    _touch_images(tmp_path / "more" / "bob", ["bob_lt", "bob_ft", "bob_rt"], ".jpg")
    (tmp_path / "more" / "bob" / "diagram1.gif").write_bytes(b"\x00" * 64)
    triplets, problems = discover_triplets([tmp_path / "more"])
    assert sorted(t.name for t in triplets) == ["alice", "bob"] and not problems
    triplets, problems = discover_triplets([tmp_path / "more" / "alice"])
    assert len(triplets) == 1 and not problems


def test_single_triplet_folder_and_three_paths(tmp_path):
    _touch_images(tmp_path / "me", VIEWS)
    triplets, problems = discover_triplets([tmp_path / "me"])
    assert [t.name for t in triplets] == ["me"] and not problems
    paths = [tmp_path / "me" / f"{v}.png" for v in ("left", "front", "right")]
    t = triplet_from_paths(paths)
    assert t.ordered() == paths
    triplets, _ = discover_triplets(paths)
    assert triplets[0].ordered() == paths


def test_bad_input_lists_raise_input_error(tmp_path):
    _touch_images(tmp_path, ["a", "b"])
    (tmp_path / "empty").mkdir()
    for args, words in [([tmp_path / "nope"], "not found"),
                        ([tmp_path / "empty"], "no triplet found"),
                        ([tmp_path / "a.png", tmp_path / "b.png"], "expected one folder or three")]:
        with pytest.raises(InputError) as err:
            discover_triplets(args)
        assert words in str(err.value)


def test_decode_8_16_bit_grey_rgba_webp_bmp(tmp_path):
    rgb = make_crops(3, size=32)[0]
    bgr = rgb[:, :, ::-1]
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    cv2.imwrite(str(tmp_path / "a.bmp"), bgr)
    cv2.imwrite(str(tmp_path / "a.webp"), bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])    # lossless
    for ext in ("png", "bmp", "webp"):
        np.testing.assert_array_equal(decode_image(tmp_path / f"a.{ext}"), rgb)
    cv2.imwrite(str(tmp_path / "a16.png"), bgr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(decode_image(tmp_path / "a16.png"), rgb)
    grey = rgb[:, :, 1]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = decode_image(tmp_path / "g.png")
    assert out.shape == (32, 32, 3) and (out == grey[:, :, None]).all()
    alpha = np.zeros((32, 32, 1), np.uint8)
    alpha[:16] = 255                                     # top half opaque, bottom transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), np.concatenate([bgr, alpha], axis=2))
    out = decode_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(out[:16], rgb[:16])
    assert (out[16:] == 128).all()                       # composited over mid-grey
    assert out.dtype == np.uint8 and out.flags.c_contiguous


def _jpeg_with_orientation(image_bgr: np.ndarray, orientation: int) -> bytes:
    ok, jpg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    jpg = jpg.tobytes()
    tiff = (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    seg = b"Exif\x00\x00" + tiff
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg + jpg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv(tmp_path, orientation):
    img = np.zeros((20, 30, 3), np.uint8)
    img[:6, :9] = (255, 0, 0)                            # an asymmetric mark: every flip differs
    img[14:, 25:] = (0, 255, 0)
    data = _jpeg_with_orientation(img, orientation)
    assert exif_orientation(data) == orientation
    path = tmp_path / "o.jpg"
    path.write_bytes(data)
    ours = decode_image(path)
    theirs = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]   # OpenCV applies EXIF itself
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[:2] == ((20, 30) if orientation <= 4 else (30, 20))


def test_unreadable_and_empty_files_name_the_file(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all" * 10)
    ok, png = cv2.imencode(".png", make_crops(0, 64)[0])
    (tmp_path / "cut.png").write_bytes(png.tobytes()[:100])
    for name, words in [("zero.jpg", "empty"), ("junk.jpg", "not a readable image"),
                        ("cut.png", "not a readable image"), ("missing.png", "not found")]:
        with pytest.raises(InputError) as err:
            decode_image(tmp_path / name)
        assert name in str(err.value) and words in str(err.value)


def test_written_triplet_round_trips(tmp_path):
    crops = make_crops(5)
    write_triplet(tmp_path / "t", crops)
    t, _ = discover_triplets([tmp_path / "t"])
    for img, path in zip(crops, t[0].ordered()):
        np.testing.assert_array_equal(decode_image(path), img)


# --- symbolic links: one rule (dfmvr.runtime.inputs.LINK_RULE) ----------------------------------------
def test_a_link_to_dot_inside_a_triplet_folder_adds_nothing(tmp_path):
    _touch_images(tmp_path / "me", VIEWS)
    (tmp_path / "me" / "again").symlink_to(".", target_is_directory=True)
    (tmp_path / "me" / "loop").symlink_to(tmp_path / "me", target_is_directory=True)
    triplets, problems = discover_triplets([tmp_path / "me"])
    assert [t.name for t in triplets] == ["me"] and not problems     # one triplet: not a batch


def test_batch_folders_follow_links_and_search_each_real_folder_once(tmp_path):
    _touch_images(tmp_path / "elsewhere" / "p9", VIEWS)             # outside the batch: reached by a link
    batch = tmp_path / "batch"
    _touch_images(batch / "p1", VIEWS)
    (batch / "linked").symlink_to(tmp_path / "elsewhere" / "p9", target_is_directory=True)
    (batch / "alias").symlink_to(batch / "p1", target_is_directory=True)     # a folder already searched
    (batch / "p1" / "up").symlink_to(batch, target_is_directory=True)        # a loop
    (batch / "tree").symlink_to(tmp_path / "elsewhere", target_is_directory=True)   # reaches p9 again
    images = tmp_path / "photos"
    _touch_images(images, ["a", "b", "c"])
    (batch / "p2").mkdir()
    for view, name in zip(VIEWS, "abc"):                               # links to images are images
        (batch / "p2" / f"{view}.png").symlink_to(images / f"{name}.png")
    triplets, problems = discover_triplets([batch])
    assert sorted(t.name for t in triplets) == ["linked", "p1", "p2"] and not problems
    p2 = {t.name: t for t in triplets}["p2"]
    assert [p.resolve().name for p in p2.ordered()] == ["a.png", "b.png", "c.png"]


def test_the_link_rule_is_the_one_dfmvr_run_help_states():
    from dfmvr.cli.run import command
    from dfmvr.runtime.inputs import LINK_RULE

    assert " ".join(LINK_RULE.split()) in " ".join(command.help.split())
