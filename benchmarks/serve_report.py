"""The verdicts and the Markdown tables of benchmarks/serve_bench.py's figures."""

from __future__ import annotations


def verdicts(results: dict) -> list[str]:
    lines = []
    if "resnet50" in results:
        r = results["resnet50"]
        svc = next(x for x in r["service"] if x["concurrency"] == 32)
        ratio = svc["requests_per_s"] / r["raw"][32]["images_per_s"]
        lines.append(f"resnet50: service at c=32 is {ratio:.2f}x raw batch-32 throughput "
                     f"(target >= 0.8): {'MET' if ratio >= 0.8 else 'MISSED'}")  # fmt: skip
    if "demo" in results:
        d = results["demo"]
        svc32 = next(x for x in d["service"] if x["concurrency"] == 32)
        bare32 = next(x for x in d["bare"] if x["concurrency"] == 32)
        ratio = svc32["requests_per_s"] / bare32["requests_per_s"]
        lines.append(f"demo: service at c=32 is {ratio:.2f}x the bare endpoint's requests/s "
                     f"(target >= 0.6): {'MET' if ratio >= 0.6 else 'MISSED'}")  # fmt: skip
        svc1 = next(x for x in d["service"] if x["concurrency"] == 1)
        bare1 = next(x for x in d["bare"] if x["concurrency"] == 1)
        budget = bare1["p50_ms"] + d["raw"][1]["batch_ms_p50"] + 5
        lines.append(
            f"demo: service p50 at c=1 is {svc1['p50_ms']:.2f} ms, budget bare "
            f"{bare1['p50_ms']:.2f} + raw {d['raw'][1]['batch_ms_p50']:.2f} + 5 = "
            f"{budget:.2f} ms: {'MET' if svc1['p50_ms'] <= budget else 'MISSED'}"
        )
    return lines


def markdown(results: dict) -> str:
    """The figures as the tables of benchmarks/RESULTS.md."""
    out = [f"Machine: {results['machine']}; load average before the run: "
           f"{results['load_before']:.2f}; settings {results['settings']}.", ""]  # fmt: skip

    def rows(title: str, runs: list[dict]) -> None:
        out.append(f"| {title} | requests/s | p50 ms | p99 ms | mean batch |")
        out.append("|---|---|---|---|---|")
        for r in runs:
            batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else ""
            out.append(f"| concurrency {r['concurrency']} | {r['requests_per_s']:.1f} | "
                       f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {batch} |")  # fmt: skip
        out.append("")

    if "resnet50" in results:
        raw = results["resnet50"]["raw"]
        out += ["| resnet50, raw ONNX Runtime | images/s | ms per run |", "|---|---|---|"]
        out += [f"| batch {n} | {raw[n]['images_per_s']:.1f} | {raw[n]['batch_ms_p50']:.1f} |"
                for n in (1, 8, 32)]  # fmt: skip
        out.append("")
        rows("resnet50 service", results["resnet50"]["service"])
    if "demo" in results:
        raw = results["demo"]["raw"]
        out.append(f"Demo bundle, raw ONNX Runtime: batch 1 {raw[1]['batch_ms_p50']:.2f} ms per "
                   f"run; batch 32 {raw[32]['images_per_s']:.0f} images/s.")  # fmt: skip
        out.append("")
        rows("bare FastAPI endpoint", results["demo"]["bare"])
        rows("demo service", results["demo"]["service"])
    out += [f"- {v}" for v in results["verdicts"]]
    return "\n".join(out) + "\n"
