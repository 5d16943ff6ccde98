"""``jaxdyn status``: progress of a sweep while it runs or after.

Owns: counting done and diverged runs from committed parts, the write locks and progress
records of the processes (through the store's names), rates and ETA, and whether the sweep
file changed since.

Must not: write anything or take a lock.
"""

from __future__ import annotations

import json
import os
import platform
import time
import tomllib
from pathlib import Path


from jaxdyn import store
from jaxdyn.results.files import DEFAULT_ROOT, read_manifest, resolve


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def pid_alive(pid: int, started: float | None = None) -> bool | None:
    """Whether process ``pid`` on this host is alive (and not a later process that reused the
    pid: on Linux its start time must precede ``started``); None if it cannot be told."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OSError, ValueError, TypeError, OverflowError):
        return None
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    bt = _boot_time()
    if started is not None and bt is not None:
        start = bt + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if start > float(started) + 2.0:
            return False  # the pid now belongs to a process started after the run
    return True


def _flock_holders(path: Path) -> list[int] | None:
    """Pids holding a flock on ``path`` (Linux /proc/locks; None elsewhere). Looks only: it
    never takes the lock, so it cannot make a starting ``jaxdyn run`` fail."""
    try:
        st = path.stat()
    except OSError:
        return []
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in text.splitlines():
        f = line.split()
        if "->" in f:  # a waiter line
            continue
        if len(f) >= 6 and f[1] == "FLOCK":
            dev = f[5].split(":")
            if len(dev) == 3 and f"{int(dev[0], 16):02x}:{int(dev[1], 16):02x}:{dev[2]}" \
                    == want:
                pids.append(int(f[4]))
    return pids


def _fmt_toml(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_fmt_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_toml(x) for x in v) + "]"
    return repr(v)


def _overrides(man: dict) -> list[str]:
    """The ``--set`` options of the original run: recorded ones, or the simple ones that can
    be told from the difference between the sweep as run and its file text."""
    if isinstance(man.get("overrides"), list):
        return [str(o) for o in man["overrides"]]
    try:
        doc = tomllib.loads(man.get("source") or "")
    except tomllib.TOMLDecodeError:
        return []
    ran = man.get("sweep") or {}
    out = []
    for k in ("name", "steps", "precision"):
        if k in ran and doc.get(k, ran[k]) != ran[k]:
            out.append(f"{k}={_fmt_toml(ran[k])}")
    seeds = doc.get("seeds", 1)
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if "seeds" in ran and seeds != ran["seeds"]:
        out.append(f"seeds={_fmt_toml(ran['seeds'])}")
    log = doc.get("log")
    if isinstance(ran.get("log"), dict) and isinstance(log, dict):
        for k, v in ran["log"].items():
            if log.get(k) != v:
                out.append(f"log.{k}={_fmt_toml(v)}")
    fixed = doc.get("fixed", {}) if isinstance(doc.get("fixed"), dict) else {}
    for k, v in (ran.get("fixed") or {}).items():
        if k not in fixed or fixed[k] != v:
            if k in fixed and isinstance(v, (int, float)) and fixed[k] == v:
                continue
            out.append(f"{k}={_fmt_toml(v)}")
    return out


def _file_state(man: dict, folder: Path) -> dict:
    src = man.get("source_file")
    if not src:
        return {"path": None, "state": "unknown", "text": "no sweep file recorded"}
    p = Path(src)
    cands = [p] if p.is_absolute() else [p, folder.resolve().parent.parent / p]
    for c in cands:
        try:
            text = c.read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as e:
            return {"path": str(c), "state": "unreadable", "text": f"{c}: unreadable ({e})"}
        if text == man.get("source"):
            return {"path": str(c), "state": "unchanged", "text": f"{c}: unchanged"}
        try:
            same = tomllib.loads(text) == tomllib.loads(man.get("source") or "")
        except tomllib.TOMLDecodeError:
            same = False
        what = ("comments or formatting only" if same else
                "different settings: re-running it would be refused; give it a new name, "
                "or --force")
        return {"path": str(c), "state": "changed",
                "text": f"{c}: file changed since the run ({what})"}
    return {"path": src, "state": "missing",
            "text": f"{src}: file missing (looked in {', '.join(map(str, cands))})"}


def sweep_status(name_or_dir: str | Path, root: str | Path | None = None,
                 now: float | None = None) -> dict:
    """Progress of one sweep, from its committed parts, its manifest and the progress records
    of the processes running it; safe while the sweep is being written.

    Returns a dict: ``name``, ``experiment``, ``state`` ("complete", "running", "stopped",
    "stalled", "incomplete", "not started" or "damaged"), ``runs_done``, ``runs_total``,
    ``diverged``, ``parts`` (sound runs parts), ``damaged_parts`` and ``orphan_parts``
    (``{part name: why}``: what the next ``jaxdyn run`` moves aside and re-runs; every part's
    footer and row count is checked, :func:`jaxdyn.store.check_parts`), ``moved_to_damaged``
    (parts an earlier run moved to ``damaged/``), ``chunks_done``/``chunks_total`` (of the current launch), ``run_steps_per_s``
    and ``eta_s`` (while running), ``processes`` (one dict per progress record), ``file``
    (whether the sweep file changed since) and ``resume`` (the command that resumes it).
    """
    folder = resolve(name_or_dir, root)
    man = read_manifest(folder)
    now = time.time() if now is None else now
    check = store.check_parts(folder, with_status=True)
    done = diverged = 0
    commits = []  # (mtime, runs) of each runs part: the sweep's commit timeline
    for name, statuses in check.statuses.items():
        try:
            mtime = (folder / store.RUNS / name).stat().st_mtime
        except FileNotFoundError:
            continue
        done += len(statuses)
        diverged += len(statuses) - statuses.count("ok")
        commits.append((mtime, len(statuses)))
    damaged = dict(check.damaged)
    # orphans are damage only once nobody is writing (a running writer commits runs last)
    orphans = {n: f"{' and '.join(t)} part without its runs part"
               for n, t in check.orphans.items()}
    moved = sorted({p.name for p in (folder / store.DAMAGED).glob("*/" + store.PART_GLOB)})
    total = int(man.get("runs_total") or 0)

    lock_pids: list[int] = []  # processes holding the sweep's write locks (this host)
    for lp in store.lock_files(folder.parent, folder.name):
        lock_pids += _flock_holders(lp) or []
    procs = []
    for p in sorted(folder.glob(store.PROGRESS_GLOB)):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        procs.append(_process_status(rec, man, now, lock_pids))
    running = [q for q in procs if q["state"] == "running"]
    if damaged:
        state = "damaged"
    elif done >= total > 0:
        state = "complete"
    elif running or lock_pids:
        state = "running"
    elif any(q["state"] == "stopped" for q in procs):
        state = "stopped"
    elif any(q["state"] == "stalled" for q in procs):
        state = "stalled"
    elif done == 0 and not procs:
        state = "not started"
    else:
        state = "incomplete"
    refine = (man.get("sweep") or {}).get("refine")
    refine_info = None
    if refine:  # done only once the last round ran (the grid's runs_total is round 0)
        refine_info = _refine_status(folder, refine, procs)
        if state == "complete" and not refine_info["finished"]:
            state = "running" if (running or lock_pids) else "incomplete"
    search = (man.get("sweep") or {}).get("search")
    if search and state == "complete":  # done only once the last batch was told
        if not any((q.get("search") or {}).get("finished") for q in procs):
            state = "running" if (running or lock_pids) else "incomplete"
    root_dir = folder.parent
    cmd = f"jaxdyn run {man.get('source_file') or 'FILE'}"
    if root_dir.resolve() != DEFAULT_ROOT.resolve():
        cmd += f" --out {root_dir}"
    for o in _overrides(man):
        cmd += f" --set {o}" if " " not in o else f" --set '{o}'"
    live = running if state == "running" else []
    rate_steps = sum(q["run_steps_per_s"] or 0.0 for q in live) if live else None
    eta = max((q["eta_s"] for q in live if q["eta_s"] is not None), default=None)
    if state == "running":
        # recent throughput from the commit times of this launch's parts (compile excluded)
        since = min((q["started"] for q in live), default=0.0)
        recent = sorted(c for c in commits if c[0] >= since)[-64:]
        steps = int((man.get("sweep") or {}).get("steps") or 0)
        if len(recent) >= 3 and recent[-1][0] - recent[0][0] > 0.05:
            runs_rate = sum(n for _, n in recent[1:]) / (recent[-1][0] - recent[0][0])
            rate_steps = runs_rate * steps if steps else rate_steps
            eta = max((total - done) / runs_rate - max(now - recent[-1][0], 0.0), 0.0)
    return {
        "name": folder.name,
        "folder": str(folder),
        "experiment": man.get("experiment"),
        "state": state,
        "runs_done": done,
        "runs_total": total,
        "diverged": diverged,
        "parts": len(check.run_ids),
        "damaged_parts": damaged,
        "orphan_parts": orphans if state != "running" else {},
        "moved_to_damaged": moved,
        "chunks_done": sum(q["chunks_done"] for q in procs),
        "chunks_total": sum(q["chunks_total"] for q in procs),
        "run_steps_per_s": rate_steps,
        "eta_s": eta,
        "writer_pids": lock_pids,
        "processes": procs,
        "file": _file_state(man, folder),
        "resume": cmd,
        **({"refine": refine_info} if refine_info is not None else {}),
    }


def _refine_status(folder: Path, refine: dict, procs: list[dict]) -> dict:
    """A refined sweep's rounds and brackets (``jaxdyn.adaptive``)."""
    from jaxdyn.adaptive._brackets import summary

    recs = [p.get("refine") or {} for p in procs]
    info = summary(folder, refine)
    info["finished"] = any(r.get("finished") for r in recs)
    info["round"] = max((int(r.get("round", 0)) for r in recs), default=0)
    return info


def _process_status(rec: dict, man: dict, now: float, lock_pids: list[int]) -> dict:
    started = float(rec.get("started") or now)
    updated = float(rec.get("updated") or started)
    cd, ct = int(rec.get("chunks_done") or 0), int(rec.get("chunks_total") or 0)
    rd, rt = int(rec.get("runs_done") or 0), int(rec.get("runs_total") or 0)
    steps = int(rec.get("steps") or (man.get("sweep") or {}).get("steps") or 0)
    el = max(updated - started, 1e-9)
    rate = rd / el if rd else None  # runs/s of this launch, compile included
    host = rec.get("host") or (man.get("host") if int(man.get("process_count") or 1) == 1
                               else None)
    pid = rec.get("pid")
    age = max(now - updated, 0.0)
    stale_after = max(600.0, 5.0 * el / max(cd, 1))
    alive = None
    if pid is not None and host == platform.node():
        alive = pid_alive(pid, started)
        if pid in lock_pids:
            alive = True
    if rec.get("finished") is not None:
        state = "finished"
    elif alive is False:
        state = "stopped"
    elif alive is None and age > stale_after:
        state = "stalled"
    else:
        state = "running"
    eta = None
    if state == "running" and rate:
        eta = max((rt - rd) / rate - age, 0.0)
    return {"process_index": rec.get("process_index", 0), "pid": pid, "host": host,
            "state": state, "chunks_done": cd, "chunks_total": ct, "runs_done": rd,
            "runs_total": rt, "run_steps_per_s": rate * steps if rate else None,
            "eta_s": eta, "updated_ago_s": age, "started": started,
            "finished": rec.get("finished"), "compile_s": rec.get("compile_s"),
            **{k: rec[k] for k in ("refine", "search") if isinstance(rec.get(k), dict)}}
