"""Turns the soak benchmark's samples.csv and oha summaries into report.md (stdout) and soak.svg.

usage: report.py <dir> <minutes> <rate> <edits>

Warm-up is the first fifth of the run (at least one minute): allocator arenas, pools and
caches fill then. After it, each proxy's RSS should stay within ±10 % of its mean and its file
descriptors flat; the report says whether they did.
"""
import csv
import json
import sys

out, minutes, rate, edits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
for r in rows:
    for k in ("t_s", "rss_kib", "anon_kib", "fds", "open_conns"):
        r[k] = int(float(r[k]))
    r["cpu_s"] = float(r["cpu_s"])
end = max(r["t_s"] for r in rows)
warm = max(60, end // 5)

md = [f"### Soak: {rate} rps for {minutes} min, {edits} config edits (samples every 10 s; warm-up {warm} s)\n"]
md.append("| proxy | RSS after warm-up MiB (min / mean / max) | spread around the mean | anon RSS MiB (min / max) | fds (min / max) | open connections (min / max) | CPU s per 1 000 requests | verdict |")
md.append("|---|---|---|---|---|---|---|---|")
total_req = 0
loads = {}
for name in ("http1", "http2", "new"):
    try:
        j = json.load(open(f"{out}/load-{name}.json"))
    except (OSError, ValueError):
        continue
    codes = j.get("statusCodeDistribution", {}) or {}
    errors = j.get("errorDistribution", {}) or {}
    # Requests still in flight when oha's duration ends are aborted by oha itself: not errors.
    cut = sum(v for k, v in errors.items() if "aborted due to deadline" in k)
    failed = sum(errors.values()) - cut
    n = sum(codes.values())
    total_req += n + failed
    loads[name] = (j["summary"].get("requestsPerSec", 0), codes.get("200", 0), n, failed, cut,
                   j.get("latencyPercentiles", {}).get("p99"))
series = {}
for proxy in ("client", "server"):
    s = [r for r in rows if r["proxy"] == proxy]
    series[proxy] = s
    after = [r for r in s if r["t_s"] >= warm] or s
    rss = [r["rss_kib"] / 1024 for r in after]
    anon = [r["anon_kib"] / 1024 for r in after]
    fds = [r["fds"] for r in after]
    conns = [r["open_conns"] for r in after]
    mean = sum(rss) / len(rss)
    spread = max(max(rss) - mean, mean - min(rss)) / mean * 100
    cpu = (s[-1]["cpu_s"] - s[0]["cpu_s"]) / max(total_req / 1000, 1)
    flat_fds = max(fds) - min(fds) <= max(8, min(fds) // 10)
    ok = spread <= 10 and flat_fds
    verdict = "flat" if ok else ("RSS moves more than 10 %" if spread > 10 else "fds grow")
    md.append(f"| {proxy} | {min(rss):.1f} / {mean:.1f} / {max(rss):.1f} | ±{spread:.1f} % | {min(anon):.1f} / {max(anon):.1f} | "
              f"{min(fds)} / {max(fds)} | {min(conns)} / {max(conns)} | {cpu:.3f} | {verdict} |")
md.append("")
md.append("| load | achieved rps | 200 / responses | connection errors | cut by the end of the run | p99 ms |")
md.append("|---|---|---|---|---|---|")
for name, (rps, ok, n, err, cut, p99) in loads.items():
    p = f"{p99 * 1000:.2f}" if p99 is not None else "-"
    md.append(f"| {name} | {rps:.0f} | {ok} / {n} | {err} | {cut} | {p} |")
print("\n".join(md))

# soak.svg: RSS of each proxy (left axis) and fds (right axis) over time.
W, H, L, R, T, B = 720, 360, 60, 60, 30, 40
top_rss = max(r["rss_kib"] for r in rows) / 1024 * 1.2
top_fds = max(r["fds"] for r in rows) * 1.2
x = lambda t: L + (W - L - R) * t / max(end, 1)
y_rss = lambda v: H - B - (H - T - B) * v / top_rss
y_fds = lambda v: H - B - (H - T - B) * v / top_fds
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="18" text-anchor="middle">Soak: {rate} rps, {minutes} min, RSS (solid) and fds (dashed) per proxy</text>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{W - R}" y1="{T}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{x(warm)}" y1="{T}" x2="{x(warm)}" y2="{H - B}" stroke="#bbb" stroke-dasharray="2,3"/>',
       f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">seconds</text>',
       f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">RSS (MiB)</text>',
       f'<text x="{W - 14}" y="{H / 2}" transform="rotate(90 {W - 14} {H / 2})" text-anchor="middle">open fds</text>']
for i in range(5):
    v = top_rss * i / 4
    svg.append(f'<text x="{L - 6}" y="{y_rss(v) + 4}" text-anchor="end">{v:.0f}</text>')
    f = top_fds * i / 4
    svg.append(f'<text x="{W - R + 6}" y="{y_fds(f) + 4}">{f:.0f}</text>')
    t = end * i / 4
    svg.append(f'<text x="{x(t)}" y="{H - B + 16}" text-anchor="middle">{t:.0f}</text>')
colors = {"client": "#1f77b4", "server": "#d62728"}
for proxy, s in series.items():
    pts = " ".join(f"{x(r['t_s']):.1f},{y_rss(r['rss_kib'] / 1024):.1f}" for r in s)
    svg.append(f'<polyline fill="none" stroke="{colors[proxy]}" stroke-width="2" points="{pts}"/>')
    pts = " ".join(f"{x(r['t_s']):.1f},{y_fds(r['fds']):.1f}" for r in s)
    svg.append(f'<polyline fill="none" stroke="{colors[proxy]}" stroke-dasharray="5,4" points="{pts}"/>')
for i, (proxy, c) in enumerate(colors.items()):
    svg.append(f'<text x="{L + 10}" y="{T + 16 + 16 * i}" fill="{c}">{proxy} proxy</text>')
svg.append("</svg>")
open(f"{out}/soak.svg", "w").write("\n".join(svg) + "\n")
