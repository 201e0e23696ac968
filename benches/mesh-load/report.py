#!/usr/bin/env python3
"""Turns the mesh load benchmark's results.jsonl into report.md and added-latency.svg.

Setups: direct, remora and haproxy, and linkerd2-proxy when the run had it (L2P=<binary>): a
column or row wherever the others have one, and its lines in the plot."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, workers, machine = sys.argv[2], sys.argv[3], sys.argv[4]
setups = ["direct", "remora", "haproxy"] + (["linkerd2-proxy"] if any(r.get("setup") == "linkerd2-proxy" for r in rows) else [])
proxies = setups[1:]


def ms(v):
    return "-" if v is None else f"{v * 1000:.3f}"


def pick(scenario, **kw):
    return [r for r in rows if r["scenario"] == scenario and all(r.get(k) == v for k, v in kw.items())]


command = ("L2P=<linkerd2-proxy binary> " if "linkerd2-proxy" in setups else "") + "benches/mesh-load/run.sh"
md = [f"Machine: {machine}. Each proxy: {workers} worker thread(s). Command: `sudo {command}`.\n"]
rates = sorted({r["rate"] for r in pick("rate")})
md.append("### HTTP/1.1 keep-alive, 1 KiB, fixed rates (oha -q R --latency-correction, 64 connections)\n")
md.append("| rate | setup | achieved rps | ok/total | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | added p50 | added p99 | CPU s / 1000 req | peak RSS MiB | anon RSS MiB |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
added = {s: [] for s in proxies}
for rate in rates:
    base = (pick("rate", rate=rate, setup="direct") or [{}])[0]
    for s in setups:
        r = (pick("rate", rate=rate, setup=s) or [None])[0]
        if not r:
            continue
        a50 = a99 = None
        if s != "direct" and base.get("p50") is not None and r.get("p50") is not None:
            a50, a99 = r["p50"] - base["p50"], r["p99"] - base["p99"]
            added[s].append((rate, a50, a99))
        cpu = r.get("cpu_ticks", 0) / 100.0
        n = max(r.get("total", 0), 1)
        cpu_per = "-" if s == "direct" else f"{cpu * 1000 / n:.3f}"
        peak = "-" if s == "direct" else f"{r.get('peak_rss_kib', 0) / 1024:.1f}"
        anon = "-" if s == "direct" or "anon_kib" not in r else f"{r['anon_kib'] / 1024:.1f}"
        md.append(f"| {rate} | {s} | {r['rps']:.0f} | {r.get('ok')}/{r.get('total')} | {ms(r['p50'])} | {ms(r['p90'])} | {ms(r['p99'])} | {ms(r['p999'])} | {ms(r['max'])} | {ms(a50)} | {ms(a99)} | {cpu_per} | {peak} | {anon} |")
md.append("\n### Maximum rate (closed loop, 64 connections) and a new connection per request (16 concurrent)\n")
md.append("| setup | max rps | p50 ms | p99 ms | new-conn rps | new-conn p50 ms | new-conn p99 ms |")
md.append("|---|---|---|---|---|---|---|")
for s in setups:
    m = (pick("max", setup=s) or [{}])[0]
    c = (pick("new_conn", setup=s) or [{}])[0]
    md.append(f"| {s} | {m.get('rps', 0):.0f} | {ms(m.get('p50'))} | {ms(m.get('p99'))} | {c.get('rps', 0):.0f} | {ms(c.get('p50'))} | {ms(c.get('p99'))} |")
md.append("\n### HTTP/2, one connection, 100 concurrent streams; opaque bulk transfer (iperf3)\n")
md.append("| setup | h2 rps | h2 p50 ms | h2 p99 ms | bulk 1 stream GB/s | bulk 8 streams GB/s |")
md.append("|---|---|---|---|---|---|")
for s in setups:
    h = (pick("h2_100", setup=s) or [{}])[0]
    b1 = (pick("bulk", setup=s, streams=1) or [{}])[0]
    b8 = (pick("bulk", setup=s, streams=8) or [{}])[0]
    md.append(f"| {s} | {h.get('rps', 0):.0f} | {ms(h.get('p50'))} | {ms(h.get('p99'))} | {b1.get('gbytes_per_s', 0):.2f} | {b8.get('gbytes_per_s', 0):.2f} |")
md.append("\n### Memory\n")
conns = (pick("idle_conns") or [{}])[0].get("conns", 10000)
md.append(f"| setup | idle RSS per proxy MiB (anon) | {conns} idle connections: answered 200 | RSS added (both proxies) | per connection | per connection, each proxy (client, server) |")
md.append("|---|---|---|---|---|---|")
for s in proxies:
    idle = [f"{r['rss_kib'] / 1024:.1f}" + (f" ({r['anon_kib'] / 1024:.1f})" if "anon_kib" in r else "") for r in pick("idle_rss", setup=s)]
    ic = (pick("idle_conns", setup=s) or [{}])[0]
    delta = ic.get("rss_delta_kib", 0)
    n = max(ic.get("conns", 1), 1)
    each = ", ".join(f"{r['rss_delta_kib'] * 1024 / n:.0f} B" for r in pick("idle_conns_proc", setup=s))
    md.append(f"| {s} | {', '.join(idle)} | {ic.get('ok', '-')} | {delta / 1024:.1f} MiB | {delta * 1024 / n:.0f} B | {each or '-'} |")
open(f"{out}/report.md", "w").write("\n".join(md) + "\n")

# The plot: added p50 and p99 (ms) against the rate.
W, H, L, B = 640, 360, 60, 40
pts = [v for s in added.values() for _, a50, a99 in s for v in (a50, a99)]
ymax = max([0.001] + [p * 1000 for p in pts]) * 1.15
xs = rates or [1]
def x(rate):
    i = xs.index(rate)
    return L + (W - L - 20) * (i / max(len(xs) - 1, 1))
def y(v):
    return H - B - (H - B - 20) * (v * 1000 / ymax)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - 20}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{L}" y1="20" x2="{L}" y2="{H - B}" stroke="black"/>',
       f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">rate (requests/s)</text>',
       f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">added latency over direct (ms)</text>']
for rate in xs:
    svg.append(f'<text x="{x(rate)}" y="{H - B + 16}" text-anchor="middle">{rate}</text>')
for i in range(5):
    v = ymax * i / 4
    svg.append(f'<text x="{L - 6}" y="{y(v / 1000) + 4}" text-anchor="end">{v:.2f}</text>')
colors = {"remora": "#1f77b4", "haproxy": "#d62728", "linkerd2-proxy": "#2ca02c"}
for s, series in added.items():
    for idx, (label, dash) in enumerate((("p50", ""), ("p99", "5,4"))):
        line = " ".join(f"{x(t[0])},{y(t[idx + 1])}" for t in series)
        svg.append(f'<polyline fill="none" stroke="{colors[s]}" stroke-width="2" stroke-dasharray="{dash}" points="{line}"/>')
legend = [(f"{s} {q}", s, dash) for s in proxies for q, dash in (("p50", ""), ("p99", "5,4"))]
for i, (label, s, dash) in enumerate(legend):
    yy = 30 + 16 * i
    svg.append(f'<line x1="{W - 190}" y1="{yy}" x2="{W - 160}" y2="{yy}" stroke="{colors[s]}" stroke-width="2" stroke-dasharray="{dash}"/>')
    svg.append(f'<text x="{W - 154}" y="{yy + 4}">{label}</text>')
svg.append("</svg>")
open(f"{out}/added-latency.svg", "w").write("\n".join(svg) + "\n")
print("\n".join(md))
