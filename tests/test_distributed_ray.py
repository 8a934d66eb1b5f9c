"""groundroll.distributed on a local Ray cluster started here (2 CPUs): the command line
with ``--engine ray --workers 2`` gives the label maps of ``--engine local``, survives a
worker process killed mid-run, and resumes without writing; the corpus aligner keeps the
input order."""

import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from groundroll.alignment.io import read_lines  # noqa: E402
from groundroll.cli import main  # noqa: E402
from groundroll.data import toy_translation  # noqa: E402
from groundroll.data.shapes import EVAL_SEED_OFFSET, scene  # noqa: E402
from groundroll.distributed import align_corpus  # noqa: E402

SEG_MODEL = "bundled:shapes-clip-short"
PROMPTS = ["red circle", "blue star", "yellow triangle"]
N_IMAGES = 24


@pytest.fixture(scope="module")
def cluster():
    # Workers inherit the environment: one thread each on the shared CPUs.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held_out")
    for i in range(N_IMAGES):
        Image.fromarray(scene(EVAL_SEED_OFFSET + i, size=(48, 64)).image).save(
            folder / f"scene{i:02d}.png")
    return sorted(folder.glob("*.png"))


def _segment(images, out, *extra):
    args = ["segment", *map(str, images)]
    for p in PROMPTS:
        args += ["-p", p]
    return main([*args, "--model", SEG_MODEL, "--mask-threshold", "0.5", "--out", str(out),
                 *extra])


def _worker_pids(name: str) -> set[int]:
    """Processes of our Ray actors (their titles name the worker class)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if name.encode() in cmdline:
            pids.add(int(entry))
    return pids


class _KillOneWorker(threading.Thread):
    """Kills one worker process once ``after`` label maps are in ``out``.

    Workers are stopped (SIGSTOP) the moment the thread sees them and run only in short
    slices (SIGCONT, 50 ms, SIGSTOP) between its checks, so the run cannot finish while
    this thread waits for its turn on a loaded machine: the kill lands mid-run, after
    ``after`` label maps, whatever the load.
    """

    def __init__(self, out, name, after, before):
        super().__init__(daemon=True)
        self.out, self.name, self.after, self.before = out, name, after, before
        self.killed = None
        self.labels_at_kill = None
        self.stop = threading.Event()

    def _done(self) -> int:
        return len(list(self.out.glob("*_labels.png"))) if self.out.is_dir() else 0

    @staticmethod
    def _signal(pids, sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self):
        seen = set()
        try:
            while not self.stop.is_set():
                pids = _worker_pids(self.name) - self.before
                self._signal(pids - seen, signal.SIGSTOP)
                seen |= pids
                done = self._done()
                if pids and done >= self.after:
                    pid = min(pids)
                    os.kill(pid, signal.SIGKILL)
                    self.killed, self.labels_at_kill = pid, done
                    return
                self._signal(pids, signal.SIGCONT)
                time.sleep(0.05)
                self._signal(pids, signal.SIGSTOP)
        finally:
            self._signal(seen, signal.SIGCONT)


def test_ray_cli_matches_local_survives_a_killed_worker_and_resumes(cluster, scenes,
                                                                    tmp_path, capsys):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert _segment(scenes, local) == 0  # today's one-process path

    killer = _KillOneWorker(distributed, "SegmentWorker", after=4,
                            before=_worker_pids("SegmentWorker"))
    killer.start()
    code = _segment(scenes, distributed, "--engine", "ray", "--workers", "2",
                    "--shard-size", "4", "--batch-size", "2")
    killer.stop.set()
    killer.join()
    assert code == 0
    assert killer.killed is not None and killer.labels_at_kill < N_IMAGES, \
        "no worker was killed while the run was going"
    for path in scenes:
        a = np.asarray(Image.open(local / f"{path.stem}_labels.png"))
        b = np.asarray(Image.open(distributed / f"{path.stem}_labels.png"))
        assert np.array_equal(a, b), path.stem
        for k in range(len(PROMPTS)):
            mask = sorted(local.glob(f"{path.stem}_{k}_*.png"))[0].name
            assert np.array_equal(np.asarray(Image.open(local / mask)),
                                  np.asarray(Image.open(distributed / mask)))
    files = {p: p.stat().st_mtime_ns for p in distributed.rglob("*") if p.is_file()}

    capsys.readouterr()
    assert _segment(scenes, distributed, "--engine", "ray", "--workers", "2",
                    "--shard-size", "4", "--batch-size", "2", "--resume") == 0
    assert f"0 image(s) processed, {N_IMAGES} skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in distributed.rglob("*") if p.is_file()} == files


def test_align_corpus_on_ray_keeps_the_input_order(cluster, tmp_path):
    corpus = toy_translation.write_corpus(tmp_path / "corpus", 60, split="test")
    local, distributed = tmp_path / "local.txt", tmp_path / "ray.txt"
    options = dict(model="bundled:toy-mt", method="raw", shard_size=7, batch_size=8,
                   progress=False)
    align_corpus(corpus / "src.txt", corpus / "tgt.txt", out=local, engine="local",
                 **options)
    run = align_corpus(corpus / "src.txt", corpus / "tgt.txt", out=distributed,
                       engine="ray", workers=2, **options)
    assert (run.total, run.processed, run.failed) == (60, 60, 0)
    lines = read_lines(distributed)
    assert len(lines) == len(read_lines(corpus / "src.txt")) == 60
    assert lines == read_lines(local)


def test_ray_datasets_are_read_by_path_or_by_image_and_id(cluster, scenes, tmp_path):
    import groundroll as gr
    from groundroll.distributed import segment_dataset

    model = gr.load(SEG_MODEL)
    options = dict(model=model, mask_threshold=0.5, engine="local", shard_size=2, progress=False)
    by_path = ray.data.from_items([{"path": str(p)} for p in scenes[:3]])
    segment_dataset(by_path, PROMPTS, out=tmp_path / "paths", **options)
    pixels = {f"img{i}": np.asarray(Image.open(p)) for i, p in enumerate(scenes[:3])}
    by_image = ray.data.from_items([{"id": k, "image": v} for k, v in pixels.items()])
    run = segment_dataset(by_image, PROMPTS, out=tmp_path / "images", **options)
    assert (run.total, run.processed, run.failed) == (3, 3, 0)
    for i, path in enumerate(scenes[:3]):
        expected = gr.segment(path, PROMPTS, model=model, mask_threshold=0.5).labels
        for got in (tmp_path / "paths" / f"{path.stem}_labels.png",
                    tmp_path / "images" / f"img{i}_labels.png"):
            assert np.array_equal(np.asarray(Image.open(got)), expected)
