"""Verification of a built compilation (``make_compilation.py verify OUT.mp4``): frame count,
every frame's place in the timeline on a lossless render of the same graph, cut peaks on the
decoded H.264 and the negatives' spans. Needs PyAV and numpy.
"""
import json
import subprocess
import sys

from compilation_graph import COMPILATIONS, THREADS, H, W, effect_filters, graph, segment_chain

try:  # only verification needs numpy (and PyAV); building does not import it
    import numpy as np
except ImportError:
    np = None

B = 8  # verification compares sums over B x B pixel blocks (exact integers) of the YUV planes


def blocks(yuv):
    """(H*3/2, W) uint8 yuv420p frame -> (H/B, W/B, 3) int32 block sums of Y, U and V."""
    y = yuv[:H].reshape(H // B, B, W // B, B).sum(axis=(1, 3), dtype="int32")
    c = yuv[H:].reshape(2, H // 2, W // 2)
    uv = c.reshape(2, H // B, B // 2, W // B, B // 2).sum(axis=(2, 4), dtype="int32") * 4
    return np.dstack([y, uv[0], uv[1]])


def raw_render(inputs, chains, label):
    """Render a filter graph losslessly (no encoder) and return its frames as block sums."""
    cmd = ["nice", "-n", "19", "ffmpeg", "-nostdin", "-v", "error"] + inputs + [
        "-filter_complex", ";".join(chains), "-map", f"[{label}]"] + THREADS + [
        "-fps_mode", "passthrough", "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out, size = [], W * H * 3 // 2
    while True:
        buf = p.stdout.read(size)
        if len(buf) < size:
            break
        out.append(blocks(np.frombuffer(buf, np.uint8).reshape(H * 3 // 2, W)))
    if p.wait():
        sys.exit(f"ffmpeg failed: {' '.join(cmd)}")
    return np.stack(out)


def render(seg, fx_override=None):
    """One excerpt alone through its chain (fx_override replaces its effects)."""
    return raw_render(["-i", seg[0]], segment_chain(0, seg, "out", fx_override=fx_override), "out")


def source_frames_match(segments):
    """ffmpeg's select n is PyAV's decode index: the first plane of ffmpeg's frame K (in the
    decoder's own pixel format, no conversion) of each excerpt's first and last frame against
    PyAV's frames K-1, K, K+1 (a source with repeated frames can tie K with a neighbour)."""
    import av

    def plane0(fr):
        p = fr.planes[0]
        width = p.width * (1 if fr.format.is_planar else len(fr.format.components))
        return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :width].astype(np.int16)

    worst, problems = 0.0, []
    for f in sorted({s[0] for s in segments}):
        want = sorted({k for s in segments if s[0] == f for k in (s[1], s[2])})
        pyav, fmt = {}, None
        with av.open(f) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if any(abs(i - k) <= 1 for k in want):
                    pyav[i], fmt = plane0(fr), fr.format.name
                if i > want[-1]:
                    break
        for k in want:
            h, w = pyav[k].shape
            raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", f, "-vf",
                                  f"select='eq(n,{k})'", "-frames:v", "1", "-pix_fmt", fmt,
                                  "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
            ff = np.frombuffer(raw[:h * w], np.uint8).reshape(h, w).astype(np.int16)
            err = {j: float(np.abs(ff - pyav[j]).mean()) for j in (k - 1, k, k + 1) if j in pyav}
            worst = max(worst, err[k])
            # PyAV may bring its own libavcodec: allow a few pixels' IDCT rounding (msmpeg4)
            if err[k] > 0.05 or any(e < err[k] for e in err.values()):
                problems.append(f"{f} frame {k}: ffmpeg and PyAV differ {err}")
    print(f"  excerpt ends: ffmpeg's frame n against PyAV's frame n: worst mean abs difference "
          f"{worst:.2f} over {sum(2 for _ in segments)} ends")
    return problems


def verify(out):
    """Check OUT.mp4 against OUT.json: frame count, every frame's place in the timeline (on a
    lossless render of the same graph), cut peaks on the decoded H.264, the negatives' spans."""
    import av

    with open(out.rsplit(".", 1)[0] + ".json") as fh:
        meta = json.load(fh)
    segments, joins = COMPILATIONS[meta["compilation"]]
    problems = []
    with av.open(out) as c:
        dec = np.stack([blocks(fr.to_ndarray(format="yuv420p")) for fr in c.decode(video=0)])
    print(f"{out}: PyAV decodes {len(dec)} frames, the JSON says {meta['frames']}")
    if len(dec) != meta["frames"]:
        sys.exit("FAILED: frame count")
    problems += source_frames_match(segments)
    inputs, chains, label, _ = graph(segments, joins)
    exact = raw_render(inputs, chains, label)
    enc_err = np.abs(dec.astype(np.float32) - exact).mean(axis=(1, 2, 3)) / (B * B)
    print(f"  H.264 vs lossless render: mean abs error per frame max {enc_err.max():.2f}, "
          f"mean {enc_err.mean():.2f} (of 255)")
    if len(exact) != len(dec) or enc_err.max() > 6:
        problems.append("encoded frames differ from the lossless render")
    # every frame of the lossless render is bit-exactly its excerpt's frame, except the frames
    # of the gradual transitions, which equal neither excerpt
    refs = [render(s) for s in segments]
    starts = [sh["start_frame"] for sh in meta["shots"]]
    mixed, wrong = [], []
    for f in range(len(exact)):
        cover = [k for k, s in enumerate(segments) if starts[k] <= f < starts[k] + s[3]]
        # bit-exact, left block column aside (slideleft's first frame differs in pixel column 0)
        equal = [k for k in cover if np.array_equal(exact[f, :, 1:], refs[k][f - starts[k]][:, 1:])]
        if not equal:
            mixed.append(f)
        elif len(equal) > 1 or (len(cover) == 1 and equal != cover):
            wrong.append(f)
    labelled = []
    for t in meta["transitions"]:
        if t["type"] != "cut":
            labelled += range(t["start_frame"], t["end_frame"] + 1)
    print(f"  frames equal to no excerpt frame: {len(mixed)}, labelled gradual frames: "
          f"{len(labelled)}, identical sets: {mixed == labelled}")
    if mixed != labelled or wrong:
        problems.append(f"timeline: mixed-but-unlabelled {sorted(set(mixed) - set(labelled))[:9]}, "
                        f"labelled-but-pure {sorted(set(labelled) - set(mixed))[:9]}, wrong {wrong[:9]}")
    # hard cuts: the decoded frame difference peaks exactly at the labelled frame
    diff = np.r_[0, np.abs(np.diff(dec.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))]
    cuts = [t["start_frame"] for t in meta["transitions"] if t["type"] == "cut"]
    ratios = []
    for c in cuts:
        near = max(diff[x] for x in range(max(1, c - 3), min(len(diff), c + 4)) if x not in cuts)
        ratios.append(diff[c] / near)
        if diff[c] <= near:
            problems.append(f"cut {c}: difference does not peak there")
    print(f"  cuts: decoded difference at the cut / largest other within 3 frames: min "
          f"{min(ratios):.2f}, median {sorted(ratios)[len(ratios) // 2]:.2f} over {len(cuts)} cuts")
    # negatives: change exactly their span of one excerpt, at least 10 frames from any boundary
    bounds = [x for t in meta["transitions"] for x in (t["start_frame"], t["end_frame"])]
    for k, seg in enumerate(segments):
        for fx in seg[4]:
            a, b = effect_filters(fx)[3]
            if fx[0] == "whip":  # the steady framings before and after the move
                cw, ch, y, x0, x1 = fx[3]
                plain = [render(seg, [("whip", 10 ** 6, 1, (cw, ch, y, x0, x0))]),
                         render(seg, [("whip", -10, 1, (cw, ch, y, x1, x1))])]
            else:
                plain = [render(seg, [e for e in seg[4] if e is not fx])]
            changed = np.ones(seg[3], bool)
            for p in plain:
                changed &= (refs[k] != p).any(axis=(1, 2, 3))
            got = [int(x) for x in np.flatnonzero(changed)]
            lo, hi = starts[k] + a, starts[k] + b
            gap = min(lo - x if x < lo else x - hi if x > hi else 0 for x in bounds)
            print(f"  {fx[0]} {lo}-{hi}: changes frames {got[0]}-{got[-1]} ({len(got)}) of excerpt "
                  f"{k} ({seg[0]} {seg[1]}-{seg[2]}, output {starts[k]}-{starts[k] + seg[3] - 1}); "
                  f"nearest transition frame {gap} frames away")
            if got != list(range(a, b + 1)) or gap < 10:
                problems.append(f"negative {fx[0]} {lo}-{hi}")
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))
    print("  OK")
