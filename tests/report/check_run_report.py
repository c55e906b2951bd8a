#!/usr/bin/env python3
"""The run report, checked like a user: a tiny real run through effnet-run (coordinator + 2 MPI
ranks; effnet-train when mpirun is missing), then
  1. TensorBoard's own reader (EventAccumulator) finds the test metrics, the hparams plugin's
     records and the confusion-matrix image, and every series is on the global-step axis;
  2. effnet-explain into <run>/explain rewrites report.html with the Grad-CAM galleries, and
     effnet-results --html compares two runs;
  3. headless Chromium renders report.html: a non-trivial screenshot, every section laid out, no
     broken image (a probe copy of the page counts them; the report itself has no script).
Step 3 is skipped (exit 77) only when no chromium is installed; steps 1-2 run regardless.

Env: EFFNET_BIN_DIR, EFFNET_SOURCE_DIR; EFFNET_MPIEXEC (optional); EFFNET_REPORT_SCREENSHOT (copy
the screenshot there, to look at it).
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

BIN = os.environ["EFFNET_BIN_DIR"]
SRC = os.environ["EFFNET_SOURCE_DIR"]
SECTIONS = ["results", "accuracy", "per-class", "confusion", "curves", "throughput", "config",
            "explain"]
SKIP = 77

sys.path.insert(0, os.path.join(SRC, "tests"))
from synthetic_store import make_synthetic_store  # noqa: E402


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)
    assert r.returncode == 0, (
        f"{' '.join(cmd)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def train(tmp):
    """A 3-epoch run with 3 progressive stages on 48 px generated photos."""
    import yaml
    data = make_synthetic_store(BIN, tmp, per_class=6, size=48, seed=3)
    with open(os.path.join(SRC, "worker", "train", "presets", "tiny.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["job"]["epochs"] = 3
    cfg["job"]["progressive"].update(min_image_size=32, max_image_size=48)
    cfg["data"]["eval_image_size"] = 48
    cfg.setdefault("output", {})["progress"] = False
    config = os.path.join(tmp, "config.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(cfg, f)
    out = os.path.join(tmp, "run")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    mpiexec = os.environ.get("EFFNET_MPIEXEC") or shutil.which("mpirun")
    if mpiexec and os.path.exists(os.path.join(BIN, "effnet-run")):
        run([sys.executable, os.path.join(BIN, "effnet-run"), "--np", "2", "--oversubscribe",
             "--mpirun", mpiexec, "--config", config, "--data", data, "--out", out], env=env,
            timeout=500)
        world = 2
    else:
        print("no mpirun/effnet-run: one rank through effnet-train")
        run([os.path.join(BIN, "effnet-train"), "--config", config, "--data", data, "--out", out],
            env=env, timeout=500)
        world = 1
    return data, out, world


def epoch_records(run_dir):
    recs = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if j.get("kind") == "epoch":
                recs[j["epoch"]] = j
    return [recs[e] for e in sorted(recs)]


def check_tensorboard(run_dir, world):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    ea = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    ea.Reload()
    tags = ea.Tags()
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    epochs = epoch_records(run_dir)
    assert len(epochs) == 3, epochs
    for r in epochs:
        assert len(r["rank_img_per_s"]) == world and all(x > 0 for x in r["rank_img_per_s"]), r
        assert len(r["rank_wait_s"]) == world and all(x >= 0 for x in r["rank_wait_s"]), r
    last_step = epochs[-1]["step"]

    # One step axis: epoch/* at the step that ended each epoch, test/* at the last step.
    val = ea.Scalars("epoch/val_accuracy")
    assert [s.step for s in val] == [r["step"] for r in epochs], (val, epochs)
    assert [int(s.value) for s in ea.Scalars("epoch/epoch")] == [1, 2, 3]  # from 1
    steps = [s.step for s in ea.Scalars("train/step_loss")]
    assert steps and 0 < min(steps) and max(steps) <= last_step, steps
    acc = ea.Scalars("test/accuracy")
    assert len(acc) == 1 and acc[0].step == last_step, acc
    assert abs(acc[0].value - summary["test_accuracy"]) < 1e-6, (acc, summary)
    loss = ea.Scalars("test/loss")
    assert len(loss) == 1 and abs(loss[0].value - summary["test_loss"]) < 1e-4 * max(
        1.0, summary["test_loss"]), (loss, summary)

    # hparams plugin: experiment, session start (with values), session end (success).
    content = ea.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}, content.keys()
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} >= {"test/accuracy", "test/loss"}, exp
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    hp = start.hparams
    assert {h.name for h in exp.hparam_infos} == set(hp.keys()), (exp, hp)
    assert hp["model.variant"].string_value == "b0", hp
    assert hp["world_size"].number_value == world, hp
    assert hp["global_batch_size"].number_value == summary["batch_size"], hp
    # The lr the run used: optimizer.lr scaled to the global batch where lr_base_batch says so.
    import yaml
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    base = config["optimizer"].get("lr_base_batch", 0)
    lr = config["optimizer"]["lr"] * (summary["batch_size"] / base if base else 1)
    assert abs(hp["peak_lr"].number_value - lr) < 1e-12, (hp, lr)
    end = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_end_info"]).session_end_info
    assert end.status == 1, end  # STATUS_SUCCESS

    # The confusion matrix as a PNG image summary in the images plugin's form: a string tensor
    # [width, height, PNG] with the class legend as its description.
    from tensorboard.util import tensor_util
    meta = ea.SummaryMetadata("test/confusion_matrix")
    assert meta.plugin_data.plugin_name == "images", meta
    assert "0 = " in meta.summary_description, meta.summary_description
    (img,) = ea.Tensors("test/confusion_matrix")
    assert img.step == last_step
    w, h, png = tensor_util.make_ndarray(img.tensor_proto)
    w, h = int(w), int(h)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    try:
        from PIL import Image
        import io
        im = Image.open(io.BytesIO(png))
        assert im.size == (w, h), (im.size, w, h)
        assert len(im.convert("RGB").getcolors(1 << 24)) > 3, "a blank confusion matrix picture"
    except ImportError:
        pass

    # What TensorBoard's server reads (the plugin accumulator): the same image and scalars.
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    pa = pea.EventAccumulator(run_dir, size_guidance={pea.TENSORS: 0})
    pa.Reload()
    assert pa.SummaryMetadata("test/confusion_matrix").plugin_data.plugin_name == "images"
    (t,) = pa.Tensors("test/confusion_matrix")
    assert tensor_util.make_ndarray(t.tensor_proto)[2] == png
    (a,) = pa.Tensors("test/accuracy")
    assert abs(float(tensor_util.make_ndarray(a.tensor_proto)) - acc[0].value) < 1e-7
    print(f"tensorboard: scalars {sorted(tags['scalars'])}, image {w}x{h}, "
          f"{len(hp)} hparams, test/accuracy {acc[0].value:.4f} at step {last_step}: OK")


def check_html_text(path, want_gallery):
    html = open(path, encoding="utf-8").read()
    for s in SECTIONS:
        assert f'<section id="{s}"' in html, s
    assert "<script" not in html.lower(), "report.html must not need scripts"
    srcs = re.findall(r'<img src="([^"]*)"', html)
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n", src[:60]
    if want_gallery:
        assert len(srcs) >= 2, f"{len(srcs)} gallery images"
    for external in re.findall(r'(?:href|src)="(https?:[^"]*)"', html):
        raise AssertionError(f"external reference {external}")
    return html, len(srcs)


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  const shown = [...document.querySelectorAll('section')]
      .filter(s => s.getBoundingClientRect().height > 20).map(s => s.id);
  const svgs = [...document.querySelectorAll('svg')]
      .filter(s => s.getBoundingClientRect().width > 100).length;
  const p = document.createElement('pre');
  p.id = 'probe';
  p.textContent = JSON.stringify({images: imgs.length, broken: broken, sections: shown,
                                  svgs: svgs});
  document.body.appendChild(p);
});
</script></body>"""


def check_in_browser(browser, html_path, tmp, n_images, save_as):
    base = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            "--user-data-dir=" + os.path.join(tmp, "chromium-profile")]
    shot = os.path.join(tmp, "report.png")
    r = subprocess.run(base + ["--enable-logging=stderr", "--v=0", "--window-size=1400,5000",
                               "--screenshot=" + shot, "file://" + html_path],
                       capture_output=True, text=True, timeout=120)
    assert os.path.exists(shot), f"no screenshot (rc {r.returncode}):\n{r.stderr[-3000:]}"
    assert "Uncaught" not in r.stderr, r.stderr[-3000:]
    from PIL import Image
    im = Image.open(shot).convert("RGB")
    assert im.size == (1400, 5000), im.size
    colours = len(im.getcolors(1 << 24))
    assert colours > 50, f"screenshot looks blank ({colours} colours)"
    if save_as:
        shutil.copyfile(shot, save_as)

    # The report has no script; a copy with a probe script reports what the browser laid out.
    probe = os.path.join(os.path.dirname(html_path), "probe.html")
    with open(html_path, encoding="utf-8") as f:
        text = f.read()
    with open(probe, "w", encoding="utf-8") as f:
        f.write(text.replace("</body>", PROBE, 1))
    r = subprocess.run(base + ["--virtual-time-budget=10000", "--dump-dom", "file://" + probe],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout)
    assert m, f"probe did not run:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["broken"] == 0, got
    assert got["images"] == n_images, got
    assert got["sections"] == SECTIONS, got
    assert got["svgs"] >= 3, got
    os.remove(probe)
    print(f"chromium: {os.path.basename(html_path)} {im.size[0]}x{im.size[1]} screenshot with "
          f"{colours} colours, {got['images']} images none broken, {got['svgs']} SVGs, sections "
          f"{got['sections']}: OK")


def main():
    tmp = tempfile.mkdtemp(prefix="effnet-report-")
    ok = False
    try:
        data, run_dir, world = train(tmp)
        report = os.path.join(run_dir, "report.html")
        assert os.path.exists(report), "the run wrote no report.html"
        check_html_text(report, want_gallery=False)
        check_tensorboard(run_dir, world)

        # Explanations into the run folder: the run's page gains the galleries.
        run([os.path.join(BIN, "effnet-explain"), os.path.join(run_dir, "checkpoints", "best"),
             "--data", data, "--split", "test", "--limit", "10", "--gallery", "4",
             "--out", os.path.join(run_dir, "explain")])
        _, n_images = check_html_text(report, want_gallery=True)

        # Two runs side by side.
        other = os.path.join(tmp, "run-copy")
        shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("checkpoints"))
        compare = os.path.join(tmp, "compare.html")
        run([os.path.join(BIN, "effnet-results"), run_dir, other, "--out",
             os.path.join(tmp, "compare.md"), "--html", compare])
        html, n_compare = check_html_text(compare, want_gallery=True)
        assert html.count("<h3>run-copy</h3>") == 6, html.count("<h3>run-copy</h3>")

        browser = chromium()
        if browser is None:
            print("SKIP: chromium is not installed (Debian: apt-get install chromium; "
                  "scripts/setup.sh installs it); the TensorBoard and HTML text checks passed")
            ok = True
            return SKIP
        target = os.environ.get("EFFNET_REPORT_SCREENSHOT")
        check_in_browser(browser, report, tmp, n_images, target)
        check_in_browser(browser, compare, tmp, n_compare,
                         target and re.sub(r"(\.png)?$", "_compare.png", target, count=1))
        ok = True
        return 0
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} for inspection")


if __name__ == "__main__":
    sys.exit(main())
