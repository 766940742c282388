"""The HTML report: self-contained, the right numbers and pairs, and it renders in headless Chromium without errors."""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from tripletnet.cli import main
from tripletnet.data import stratified_subset
from tripletnet.errors import UserError
from tripletnet.evaluation import all_pairs
from tripletnet.inference import load_model
from tripletnet.report.html import extreme_pairs, write_html_report

from _checkpoint import shared_checkpoint
from _mnist import data_root, mnist

TEST_IMAGES = 600


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def report(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    # No t-SNE: openTSNE takes a minute even for 200 points on a busy 2-core machine; tests/test_plots.py covers the figure.
    write_html_report(checkpoint.parent, out, data_path=data_root(), test_images=TEST_IMAGES, tsne=False, log=lambda _: None)
    return out


class _Page(HTMLParser):
    """Text of the elements with an id, every img src, and the tags used."""

    def __init__(self):
        super().__init__()
        self.text_by_id, self.images, self.tags, self._open = {}, [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "id" in attrs:
            self._open.append(attrs["id"])
            self.text_by_id[attrs["id"]] = ""

    def handle_data(self, data):
        for element_id in self._open:
            self.text_by_id[element_id] += data

    def handle_endtag(self, tag):
        if tag in ("div", "section", "pre") and self._open:
            self._open.pop()


def _parse(text):
    page = _Page()
    page.feed(text)
    return page


def _expected(checkpoint):
    """The headline numbers computed here, independently of the report code."""
    model = load_model(checkpoint, log=lambda _: None)
    data = mnist()
    subset = stratified_subset(data.test_labels, TEST_IMAGES, 0)
    embeddings, labels = model.embed(data.test_images[subset]), data.test_labels[subset]
    verification = all_pairs(embeddings, labels, far=1e-3)
    # precision@1 with scikit-learn: the nearest other image has the query's class.
    _, nearest = NearestNeighbors(n_neighbors=2).fit(embeddings.numpy()).kneighbors(embeddings.numpy())
    other = np.where(nearest[:, 0] == np.arange(len(nearest)), nearest[:, 1], nearest[:, 0])
    precision_at_1 = float(np.mean(labels.numpy()[other] == labels.numpy()))
    return {
        "val": f"{verification.val:.4f}",
        "threshold": f"{verification.threshold:.4f}",
        "precision-at-1": f"{precision_at_1:.4f}",
    }


def test_report_is_one_self_contained_file(report):
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text, "nothing may be fetched from elsewhere"
    page = _parse(text)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert len(page.images) > 20
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.html"], "written atomically: no temporary files left"


def test_report_shows_the_headline_numbers_and_every_section(report, checkpoint):
    page = _parse(report.read_text(encoding="utf-8"))
    for key, value in _expected(checkpoint).items():
        assert value in page.text_by_id[f"headline-{key}"], key
    for section in ("verification", "figures", "retrieval", "mistakes", "queries", "curves", "config"):
        assert section in page.text_by_id, section
    assert "ROC" in page.text_by_id["figures"] and "false accepts" in page.text_by_id["mistakes"]
    assert "semihard" in page.text_by_id["config"], "the run's configuration is shown"


def test_extreme_pairs_are_the_brute_force_closest_negatives_and_farthest_positives():
    generator = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(700, 16, generator=generator), dim=1)
    y = torch.randint(0, 5, (700,), generator=generator)
    false_accepts, false_rejects = extreme_pairs(x, y, count=6, rows_per_block=64)
    d = np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=2)
    i, j = np.triu_indices(700, k=1)
    same = y.numpy()[i] == y.numpy()[j]
    negatives = np.argsort(d[i, j][~same], kind="stable")[:6]
    positives = np.argsort(-d[i, j][same], kind="stable")[:6]
    assert [(p.first, p.second) for p in false_accepts] == list(zip(i[~same][negatives], j[~same][negatives], strict=True))
    assert [(p.first, p.second) for p in false_rejects] == list(zip(i[same][positives], j[same][positives], strict=True))
    np.testing.assert_allclose([p.distance for p in false_accepts], d[i, j][~same][negatives], atol=1e-6)


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required under CI=true (Debian: apt-get install chromium)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium): the report was not rendered in a browser")
    return path


# Headless Chromium without a network: every host name fails to resolve, and no background traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]

# Injected into a copy of the report only: records script errors, console errors, broken images and
# any http(s) resource the page loaded, into an element that --dump-dom then shows.
PROBE = """<script>
window.__problems = [];
window.addEventListener('error',
  e => window.__problems.push('error: ' + (e.message || (e.target && e.target.src) || 'unknown')), true);
console.error = (...args) => window.__problems.push('console.error: ' + args.join(' '));
window.addEventListener('load', () => {
  const broken = [...document.images].filter(img => !(img.complete && img.naturalWidth > 0)).length;
  const external = performance.getEntriesByType('resource').map(r => r.name).filter(n => /^https?:/.test(n));
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({problems: window.__problems, broken, images: document.images.length, external});
  document.body.appendChild(probe);
});
</script>"""


def test_report_renders_in_headless_chromium_without_errors(report, checkpoint, tmp_path):
    chromium = _chromium()
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    run = subprocess.run([chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                         check=False, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.DOTALL)
    assert found, "the page did not finish loading"
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["problems"] == [] and probe["external"] == []
    assert probe["broken"] == 0 and probe["images"] > 20
    rendered = _parse(run.stdout)
    for key, value in _expected(checkpoint).items():
        assert value in rendered.text_by_id[f"headline-{key}"], key

    screenshot = tmp_path / "report.png"
    run = subprocess.run([chromium, *CHROMIUM_FLAGS, "--window-size=1280,1600", f"--screenshot={screenshot}", report.as_uri()],
                         check=False, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 1600)
        assert len(shot.convert("RGB").getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50, "a blank page"


def test_report_mistakes_are_one_line_exit_2(checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for argv, expected in [
        (["--run", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "r.html")], "no run folder or checkpoint"),
        (["--run", str(tmp_path), "--out", str(tmp_path / "r.html")], "holds no checkpoint"),
        (["--checkpoint", str(checkpoint), "--out", str(blocker / "r.html")], "cannot write"),
        (["--checkpoint", str(checkpoint), "--out", str(tmp_path / "r.html"), "--far", "2"], "--far must be above 0 and below 1"),
        (["--checkpoint", str(checkpoint), "--out", str(tmp_path / "r.txt")], "r.txt is not one: give a name ending in .html"),
        (["--checkpoint", str(checkpoint), "--out", str(tmp_path / "r.html"), "--test_images", "3", "--data_path", data_root()],
         "--test_images must hold two images of one identity and two identities, got 3 of the test split's 10 identities"),
    ]:
        code = main(["report", *argv])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    with pytest.raises(UserError):
        write_html_report(tmp_path / "missing", tmp_path / "r.html")


def test_a_damaged_metrics_file_is_refused_before_any_image_is_embedded(checkpoint, tmp_path, monkeypatch):
    import shutil

    from tripletnet.report import html as html_module

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "last.pt")
    (run / "metrics.jsonl").write_text("{bad\n{\"epoch\": 1}\n")  # damage before the last line: not a cut-short write

    def must_not_load(*_args, **_kwargs):
        raise AssertionError("the test images were loaded before the metrics file was read")

    monkeypatch.setattr(html_module, "load_run_images", must_not_load)
    with pytest.raises(UserError, match="line 1"):
        write_html_report(run, tmp_path / "r.html", data_path=data_root(), log=lambda _: None)
    # valid JSON, but not what the loss figure reads: refused as early (they were tracebacks after the evaluation)
    for records in ('{"epoch": 1}', '{"epoch": 1, "train_loss": "x"}', '{"epoch": "a", "train_loss": 1}'):
        (run / "metrics.jsonl").write_text(records + "\n")
        with pytest.raises(UserError, match="record 1 is not an epoch record"):
            write_html_report(run, tmp_path / "r.html", data_path=data_root(), log=lambda _: None)
    assert not (tmp_path / "r.html").exists()


def test_the_tsne_figure_title_carries_no_run_time(checkpoint, tmp_path, monkeypatch):
    from tripletnet.report import html as html_report

    titles = []
    real_figure = html_report.plots.embedding_2d_figure

    def recording_figure(points, labels, names, title):
        titles.append(title)
        return real_figure(points, labels, names, title=title)

    def quick_tsne(embeddings, seed):
        return np.random.default_rng(seed).normal(size=(len(embeddings), 2)), 12.3  # 12.3 s: a run time to keep out

    monkeypatch.setattr(html_report, "tsne_2d", quick_tsne)
    monkeypatch.setattr(html_report.plots, "embedding_2d_figure", recording_figure)
    write_html_report(checkpoint.parent, tmp_path / "r.html", data_path=data_root(), test_images=200, tsne=True,
                      log=lambda _: None)
    assert titles == ["t-SNE of 200 test embeddings"]
