#!/usr/bin/env python3
"""Independent check of the report files, in pure Python (struct, zlib-free CRC32C, xml.etree).

Usage: check_report_files.py REPORT_SAMPLE_BINARY
Runs the sample writer into a temporary directory, then decodes the TensorBoard event file
record by record (length, masked CRC32C of the length, data, masked CRC32C of the data), parses
the Event protos by hand, and parses every SVG as XML. When the `tensorboard` package is
importable it also reads the file with TensorBoard's own loader.
"""
import csv
import glob
import math
import os
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    data = open(path, "rb").read()
    pos, out = 0, []
    while pos < len(data):
        assert len(data) - pos >= 12, f"{path}: truncated header at {pos}"
        (length,) = struct.unpack_from("<Q", data, pos)
        (len_crc,) = struct.unpack_from("<I", data, pos + 8)
        assert len_crc == masked(crc32c(data[pos:pos + 8])), f"length crc at {pos}"
        body = data[pos + 12:pos + 12 + length]
        assert len(body) == length, f"truncated body at {pos}"
        (data_crc,) = struct.unpack_from("<I", data, pos + 12 + length)
        assert data_crc == masked(crc32c(body)), f"data crc at {pos}"
        out.append(body)
        pos += 12 + length + 4
    return out


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    """Yields (field, wire_type, value) of one protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v = buf[i:i + 8]
            i += 8
        elif wt == 5:
            v = buf[i:i + 4]
            i += 4
        elif wt == 2:
            n, i = varint(buf, i)
            v = buf[i:i + n]
            i += n
        else:
            raise AssertionError(f"wire type {wt}")
        assert i <= len(buf), "field past the end"
        yield field, wt, v


def decode_event(buf):
    ev = {"scalars": []}
    for f, wt, v in fields(buf):
        if f == 1:
            assert wt == 1
            ev["wall_time"] = struct.unpack("<d", v)[0]
        elif f == 2:
            assert wt == 0
            ev["step"] = v - (1 << 64) if v >= 1 << 63 else v
        elif f == 3:
            ev["file_version"] = v.decode()
        elif f == 5:
            for sf, _, sv in fields(v):
                assert sf == 1
                tag, val = None, None
                for vf, vwt, vv in fields(sv):
                    if vf == 1:
                        tag = vv.decode()
                    elif vf == 2:
                        assert vwt == 5
                        val = struct.unpack("<f", vv)[0]
                ev["scalars"].append((tag, val))
    return ev


def check_events(out):
    files = glob.glob(os.path.join(out, "tb", "events.out.tfevents.*"))
    assert len(files) == 1, files
    assert crc32c(b"123456789") == 0xE3069283
    events = [decode_event(r) for r in read_records(files[0])]
    assert events[0].get("file_version") == "brain.Event:2", events[0]
    scalars = [(e["step"], t, v) for e in events[1:] for (t, v) in e["scalars"]]
    loss = {s: v for s, t, v in scalars if t == "train/loss"}
    acc = {s: v for s, t, v in scalars if t == "val/accuracy"}
    assert sorted(loss) == list(range(40)), sorted(loss)
    assert sorted(acc) == [9, 19, 29, 39], sorted(acc)
    for s, v in loss.items():  # LossAt() in report_sample.cpp, stored as float32
        assert math.isclose(v, 2.0 / (1.0 + 0.1 * s), rel_tol=1e-6), (s, v)
    for s, v in acc.items():  # AccAt()
        assert math.isclose(v, 0.1 + 0.01 * s, rel_tol=1e-6), (s, v)
    walls = [e["wall_time"] for e in events]
    assert all(1.5e9 < w < 4e9 for w in walls) and walls == sorted(walls), walls[:3]
    print(f"events: {len(events)} records, {len(loss)} losses, {len(acc)} accuracies: OK")
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        print("tensorboard not installed: skipped its reader (pure-Python decode above)")
        return
    ea = event_accumulator.EventAccumulator(os.path.dirname(files[0]))
    ea.Reload()
    assert len(ea.Scalars("train/loss")) == 40
    print("tensorboard's EventAccumulator: OK")


SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path):
    root = ET.parse(path).getroot()  # raises on malformed XML
    assert root.tag == SVG + "svg", root.tag
    assert float(root.get("width")) > 100 and float(root.get("height")) > 100
    return root, [t.text or "" for t in root.iter(SVG + "text")]


def check_pictures(out):
    with open(os.path.join(out, "confusion_matrix.csv"), newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    assert len(names) == 7 and "Home Decor & Festive Needs" in names, names
    counts = [[int(c) for c in r[1:]] for r in rows[1:]]
    assert [r[0] for r in rows[1:]] == names
    root, texts = svg_texts(os.path.join(out, "confusion_matrix.svg"))
    for name in names:
        assert texts.count(name) == 2, (name, texts)
    cell_texts = [int(t) for t in texts if t.isdigit()]
    assert sorted(cell_texts) == sorted(c for r in counts for c in r), "cell counts differ from CSV"
    acc = sum(counts[i][i] for i in range(7)) / sum(map(sum, counts))
    assert any(f"accuracy {acc:.4f}" in t for t in texts), texts[:3]
    print(f"confusion matrix: 7x7, accuracy {acc:.4f}, SVG parses: OK")

    root, texts = svg_texts(os.path.join(out, "learning_curves.svg"))
    polylines = list(root.iter(SVG + "polyline"))
    assert len(polylines) == 4, len(polylines)
    for p in polylines:
        pts = p.get("points").split()
        assert len(pts) == 30, len(pts)
        xs = [float(pt.split(",")[0]) for pt in pts]
        assert xs == sorted(xs), "x not increasing with epoch"
    for label in ("Loss", "Accuracy", "epoch", "loss", "accuracy", "train", "val"):
        assert label in texts, label
    assert texts.count("192 px") == 2 and texts.count("256 px") == 2, texts
    print("learning curves: 2 panels, 4 curves of 30 points, SVG parses: OK")

    md = open(os.path.join(out, "results.md")).read()
    assert "| Random Forest (study, Keras, PC) | - | - | 0.8286 |" in md, md
    assert "![Confusion matrix](confusion_matrix.svg)" in md
    assert "![Learning curves](learning_curves.svg)" in md
    print("results.md: OK")


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="effnet_report_py_") as out:
        subprocess.run([binary, out], check=True)
        check_events(out)
        check_pictures(out)


if __name__ == "__main__":
    main()
