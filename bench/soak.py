"""Soak test driver (bench/soak.sh builds percept and calls this).

Runs, side by side at one thread each, for SECONDS seconds:
- `percept describe` replaying the bundled fixture in a loop (`--loop 0 --fast`, a scene
  described again only when it changes), and
- `percept kiosk --text -` answering typed lines (questions, commands, talk) fed one at a
  time as the replies come, so nothing waits in a pipe when the run ends;
samples each process's resident memory every few seconds and fails (exit 1):
- when RSS grows after the warm-up (the first quarter of the run) by more than 1% of its
  mean per hour (least-squares slope), or
- on a lost or duplicated item: a kiosk reply missing, repeated or out of order against
  the lines sent, or a describe round (all complete rounds after the first) that captions
  other frames than the round before it, or a frame captioned twice.
"""

import json
import os
import subprocess
import sys
import threading
import time

LINES = [
    "What time does the museum open on Sunday?",
    "Where is the cafe?",
    "Show me the map of the second floor.",
    "Thank you.",
    "How much is a ticket for a child?",
    "Can you switch the screen to French?",
    "It was the best of times, it was the worst of times.",
    "What's the wifi password?",
]
SAMPLE_S = 5
MAX_SLOPE = 0.01  # of the mean RSS, per hour


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_per_hour(samples):
    """Least-squares slope of (seconds, KiB) in KiB per hour."""
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return sum((t - mt) * (r - mr) for t, r in samples) / var * 3600, mr


def feed_kiosk(proc, sent, stop):
    """Writes one line, waits for its reply line, and so on until told to stop."""
    i = 0
    while not stop.is_set():
        line = LINES[i % len(LINES)]
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            return
        sent.append(line)
        reply = proc.stdout.readline()
        if not reply:
            return
        proc.replies.append(reply)
        i += 1


def check_describe(lines, fixture_frames):
    """Problems with the captions of a looped replay: repeats, and rounds that differ."""
    problems = []
    # A line the end of the run cut short is not a caption.
    seqs = [json.loads(l)["seq"] for l in lines if l.endswith("\n")]
    if len(seqs) != len(set(seqs)):
        problems.append("describe: a frame was captioned twice")
    rounds = {}
    for s in seqs:
        rounds.setdefault(s // fixture_frames, set()).add(s % fixture_frames)
    complete = sorted(rounds)[1:-1]  # the first has no scene before it; the last was cut
    for a, b in zip(complete, complete[1:]):
        if rounds[a] != rounds[b]:
            problems.append(
                f"describe: round {b} captioned frames {sorted(rounds[b])}, "
                f"round {a} {sorted(rounds[a])}"
            )
    return problems, len(seqs), len(complete)


def main():
    percept, seconds = sys.argv[1], float(sys.argv[2])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fixture = os.path.join(root, "fixtures", "describe")
    with open(os.path.join(fixture, "camera.jsonl")) as f:
        frames = 1 + max(json.loads(l)["seq"] for l in f if l.strip())
    describe = subprocess.Popen(
        [percept, "describe", "--replay", fixture, "--fast", "--loop", "0",
         "--max-interval", "1e9", "--json", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    kiosk = subprocess.Popen(
        [percept, "kiosk", "--text", "-", "--json", "--threads", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, bufsize=1)
    kiosk.replies = []
    captions = []
    reader = threading.Thread(
        target=lambda: captions.extend(iter(describe.stdout.readline, "")), daemon=True)
    reader.start()
    sent, stop = [], threading.Event()
    feeder = threading.Thread(target=feed_kiosk, args=(kiosk, sent, stop), daemon=True)
    feeder.start()

    samples = {"describe": [], "kiosk": []}
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        time.sleep(SAMPLE_S)
        for name, proc in (("describe", describe), ("kiosk", kiosk)):
            kib = rss_kib(proc.pid)
            if kib is None:
                sys.exit(f"soak: {name} ended early (exit {proc.poll()})")
            samples[name].append((time.monotonic() - start, kib))
    stop.set()
    feeder.join(timeout=120)
    describe.terminate()
    kiosk.stdin.close()
    kiosk.wait(timeout=120)
    describe.wait(timeout=60)
    reader.join(timeout=10)

    problems, captioned, rounds = check_describe(captions, frames)
    replies = [json.loads(r) for r in kiosk.replies]
    got = [r["transcript"] for r in replies]
    if got != sent[: len(got)] or len(sent) - len(got) > 1:
        problems.append(f"kiosk: {len(sent)} lines sent, {len(got)} replies, not one each in order")
    if [r["seq"] for r in replies] != sorted({r["seq"] for r in replies}):
        problems.append("kiosk: reply numbers repeat or go back")

    mib = lambda kib: kib / 1024
    for name, rows in samples.items():
        after = [r for r in rows if r[0] >= seconds / 4]
        if len(after) < 3:
            sys.exit("soak: too short to fit a slope (at least 4 samples after the warm-up)")
        slope, mean = slope_per_hour(after)
        share = slope / mean
        print(f"soak {name}: {seconds:.0f} s, RSS start {mib(rows[0][1]):.1f} MiB, peak "
              f"{mib(max(r for _, r in rows)):.1f}, end {mib(rows[-1][1]):.1f}; after the "
              f"warm-up {mib(slope):+.2f} MiB/h ({share * 100:+.2f}% of {mib(mean):.1f} MiB "
              f"per hour, bound +{MAX_SLOPE * 100:.0f}%)")
        if share > MAX_SLOPE:
            problems.append(f"{name}: RSS grows {share * 100:.2f}% per hour after the warm-up")
    print(f"soak describe: {captioned} captions over {rounds} complete rounds of "
          f"{frames} frames; kiosk: {len(sent)} lines, {len(got)} replies")
    for p in problems:
        print("soak FAILED:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
