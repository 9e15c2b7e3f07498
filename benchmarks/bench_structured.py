#!/usr/bin/env python
"""Structured-output benchmark: what a JSON-schema grammar costs Galerne, and how it compares with llama-cpp-python.

One command, one model (the bundled SmolLM2-135M GGUF), one machine, in-process (no HTTP):

    python benchmarks/bench_structured.py            # 24 schemas (a few minutes on 2 cores)
    python benchmarks/bench_structured.py --quick    # 8 schemas
    python benchmarks/bench_structured.py --json results.json

Stages, run strictly one after the other so that they never share the CPU:

(1) Galerne's engine, single stream, greedy: each picked schema's prompt decoded free and constrained by
    ``JsonOutput(schema)``, alternating free/constrained per prompt. Decode tok/s of each mode, and the ratio
    (goal >= 0.90: a grammar must not cost more than 10% of decode speed).
(2) llama-cpp-python's own JSON-schema grammar (GBNF sampler) on the same prompts and schemas. Galerne
    constrained / llama-cpp-python constrained (goal >= 3x).
(3) Grammar compile time over the whole corpus (tests/structured/schemas.json): ``GrammarCache.grammar_for``
    on a fresh cache plus ``LLMatcher`` construction, p50/p95/max.

See benchmarks/README.md for how the figures are defined.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import llguidance.llamacpp

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.engines.llamacpp.guide import GrammarGuide
from galerne.engines.llamacpp.model import LlamaModel
from galerne.errors import InvalidRequestError
from galerne.inference.constraints import JsonOutput
from galerne.inference.types import ChatMessage, GenerationRequest, Role, SamplingParams
from galerne.structured.grammars import GrammarCache
from galerne.structured.prompts import with_output_instructions

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "tests" / "structured" / "schemas.json"
N_THREADS = 2
N_CTX = 4096
MAX_TOKENS = 256
FULL_CASES = 24
QUICK_CASES = 8
WARMUP_TOKENS = 16
SYSTEM_PROMPT = "You are a helpful assistant."  # the bundled model's catalogue system prompt
BUSY_WARN = 0.15  # CPU share taken by other processes above which a stage's figures are flagged
QUIET_WAIT_S = 20.0
GOAL_CONSTRAINED_VS_FREE = 0.90
GOAL_VS_LLAMA_CPP_PYTHON = 3.0


# --------------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Case:
    """One corpus entry: a prompt and the schema its reply must follow."""

    name: str
    prompt: str
    schema: dict[str, Any]


def load_corpus(path: Path = CORPUS) -> list[Case]:
    """Every schema of the structured-output test corpus, in file order."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [Case(entry["name"], entry["prompt"], entry["schema"]) for entry in entries]


def pick_cases(corpus: Sequence[Case], count: int) -> list[Case]:
    """Every k-th schema, so the choice is deterministic and spread over the whole corpus."""
    step = max(1, len(corpus) // count)
    return list(corpus[::step][:count])


def base_messages(case: Case) -> tuple[ChatMessage, ...]:
    """What a client sends: the catalogue's system prompt and the case's user prompt."""
    return (ChatMessage(Role.SYSTEM, SYSTEM_PROMPT), ChatMessage(Role.USER, case.prompt))


def instructed_messages(case: Case) -> tuple[ChatMessage, ...]:
    """The messages the model actually sees when constrained: Galerne appends the schema to the system turn.

    Free runs and llama-cpp-python get these exact messages, so that every run has the same prompt and
    only the grammar differs.
    """
    return with_output_instructions(base_messages(case), JsonOutput(schema=case.schema))


def schema_valid(text: str, schema: dict[str, Any]) -> bool:
    """Whether `text` is one JSON value that follows `schema` (formats not checked)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    validator_class = jsonschema.validators.validator_for(schema)
    return not any(True for _ in validator_class(schema).iter_errors(value))


# --------------------------------------------------------------------------------------------- background load


@dataclass(frozen=True)
class CpuSample:
    """Jiffies of the whole machine and of this process, to tell how much CPU others took meanwhile."""

    busy: int
    total: int
    own: int


def sample_cpu() -> CpuSample | None:
    """Snapshot /proc/stat and our own CPU use (all threads); None where there is no /proc."""
    try:
        jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = jiffies[3] + jiffies[4]
    return CpuSample(busy=sum(jiffies) - idle, total=sum(jiffies), own=int(fields[11]) + int(fields[12]))


def other_share(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """Share of all cores used by other processes between two samples (0.5 = one core of two)."""
    if before is None or after is None or after.total <= before.total:
        return None
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / (after.total - before.total))


def wait_for_quiet(max_wait_s: float) -> float | None:
    """Wait (up to `max_wait_s`) until other processes use under BUSY_WARN of the CPU; returns the last share."""
    deadline = time.monotonic() + max_wait_s
    share: float | None = None
    while True:
        before = sample_cpu()
        time.sleep(1.0)
        share = other_share(before, sample_cpu())
        if share is None or share < BUSY_WARN or time.monotonic() >= deadline:
            return share


@contextlib.contextmanager
def measured_stage(label: str, loads: dict[str, float | None]) -> Iterator[None]:
    """Wait for a quiet machine, then record the CPU share other processes took while the stage ran."""
    idle = wait_for_quiet(QUIET_WAIT_S)
    if idle is not None and idle >= BUSY_WARN:
        print(f"  warning: other processes use {idle:.0%} of the CPU before stage {label}", flush=True)
    before = sample_cpu()
    try:
        yield
    finally:
        loads[label] = other_share(before, sample_cpu())


# --------------------------------------------------------------------------------------------- stage 1: Galerne


@dataclass
class RunResult:
    """One generation: how many tokens it produced and how long its decode phase took."""

    engine: str
    mode: str
    case: str
    prompt_tokens: int
    completion_tokens: int
    decode_tokens: int  # tokens produced after the first output, i.e. during decode_s
    decode_s: float
    wall_s: float
    finish_reason: str | None
    forced_tokens: int | None = None
    forced_decode_tokens: int = 0  # forced tokens among decode_tokens
    valid_json: bool | None = None
    text: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else None


def forced_within(steps: Sequence[int], first_tokens: int) -> int:
    """Forced tokens among the completion tokens after the first `first_tokens`.

    `steps` holds, per sampled token, how many tokens the grammar forced right after it, so the
    completion is: sampled, steps[0] forced, sampled, steps[1] forced, ...
    """
    position = forced_before = 0
    for count in steps:
        if position >= first_tokens:
            break
        position += 1
        taken = min(count, max(0, first_tokens - position))
        forced_before += taken
        position += count
    return sum(steps) - forced_before


@contextlib.contextmanager
def counting_forced_tokens() -> Iterator[list[int]]:
    """Record how many tokens llguidance fast-forwards after each sampled token, by wrapping
    `GrammarGuide.accept` for the stage's duration (the engine's own code is untouched).

    The engine thread is the only caller and requests run one at a time, so the caller clears and reads
    the list between requests without a lock.
    """
    steps: list[int] = []
    original: Callable[[GrammarGuide, int, int | None], list[int]] = GrammarGuide.accept

    def accept(self: GrammarGuide, token: int, max_forced: int | None = None) -> list[int]:
        forced = original(self, token, max_forced)
        steps.append(len(forced))
        return forced

    GrammarGuide.accept = accept  # type: ignore[method-assign]
    try:
        yield steps
    finally:
        GrammarGuide.accept = original  # type: ignore[method-assign,assignment]


async def galerne_run(engine: LlamaCppEngine, case: Case, *, constrained: bool, max_tokens: int) -> RunResult:
    """One single-stream request; decode rate counts tokens after the first event over the time to the last.

    The first event arrives once prefill and the first sample are done, so (last - first) is pure decode
    (plus per-token sampling and, when constrained, masking). Both modes see the same prompt tokens.
    """
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    if constrained:
        request = GenerationRequest(base_messages(case), sampling, constraint=JsonOutput(schema=case.schema))
    else:
        request = GenerationRequest(instructed_messages(case), sampling)
    start = time.perf_counter()
    [generation] = engine.submit(await engine.prepare(request))
    first_time: float | None = None
    first_tokens = last_tokens = 0
    last_time = start
    finish: str | None = None
    pieces: list[str] = []
    async for event in generation.events():
        now = time.perf_counter()
        if first_time is None:
            first_time, first_tokens = now, event.completion_tokens
        last_time, last_tokens = now, event.completion_tokens
        pieces.append(event.text)
        if event.finish_reason is not None:
            finish = event.finish_reason.value
    return RunResult(
        engine="galerne",
        mode="constrained" if constrained else "free",
        case=case.name,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=last_tokens,
        decode_tokens=last_tokens - first_tokens,
        decode_s=last_time - first_time if first_time is not None else 0.0,
        wall_s=last_time - start,
        finish_reason=finish,
        text="".join(pieces),
    )


async def galerne_stage(engine: LlamaCppEngine, cases: Sequence[Case], max_tokens: int) -> list[RunResult]:
    """Alternate free and constrained per prompt (free first), after one untimed warm-up of each mode."""
    results: list[RunResult] = []
    with counting_forced_tokens() as steps:
        for constrained in (False, True):
            await galerne_run(engine, cases[0], constrained=constrained, max_tokens=WARMUP_TOKENS)
        for case in cases:
            for constrained in (False, True):
                steps.clear()
                result = await galerne_run(engine, case, constrained=constrained, max_tokens=max_tokens)
                if constrained:
                    # the scheduler trims forced tokens at max_tokens; so does this
                    result.forced_tokens = min(sum(steps), result.completion_tokens - len(steps))
                    first = result.completion_tokens - result.decode_tokens
                    result.forced_decode_tokens = min(forced_within(steps, first), result.forced_tokens)
                    result.valid_json = schema_valid(result.text, case.schema)
                results.append(result)
                print_progress(result)
    return results


def bench_galerne(gguf: Path, cases: Sequence[Case], max_tokens: int) -> list[RunResult]:
    """Stage (1): one engine, one slot, 2 threads; closed before returning so the next stage has the CPU."""
    config = EmbeddedModelConfig(path=gguf, context_length=N_CTX, num_slots=1, num_threads=N_THREADS)
    engine = LlamaCppEngine(config)
    try:
        return asyncio.run(galerne_stage(engine, cases, max_tokens))
    finally:
        engine.close()


# ------------------------------------------------------------------------------------- stage 2: llama-cpp-python


@dataclass
class Skipped:
    case: str
    reason: str


def gbnf_problem(llm: Any, schema: dict[str, Any]) -> str | None:
    """Why llama-cpp-python cannot enforce `schema`, or None.

    `create_chat_completion` silently falls back to a plain-JSON grammar when its converter raises, so the
    converter is called here first, and the GBNF is parsed by llama.cpp (a NULL sampler would crash later).
    """
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exception / ValueError / KeyError ...
        return f"converter: {type(exc).__name__}: {exc}"[:200]
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    if not sampler:
        return "llama.cpp could not parse the generated GBNF"
    llama_cpp.llama_sampler_free(sampler)
    return None


def llama_cpp_run(llm: Any, case: Case, max_tokens: int) -> RunResult:
    """One constrained call, its decode time approximated as wall(max_tokens) - wall(max_tokens=1).

    Both calls start from an empty KV cache (`reset`), so both pay the same template rendering, schema
    conversion, grammar parsing, prefill and first sample; the difference is the time of tokens 2..n.
    """
    messages = [{"role": message.role.value, "content": message.content} for message in instructed_messages(case)]
    response_format = {"type": "json_object", "schema": case.schema}

    def call(tokens: int) -> tuple[float, dict[str, Any]]:
        llm.reset()
        start = time.perf_counter()
        out = llm.create_chat_completion(
            messages=messages, response_format=response_format, temperature=0.0, max_tokens=tokens
        )
        return time.perf_counter() - start, out

    prefill_s, _ = call(1)
    wall_s, out = call(max_tokens)
    usage = out["usage"]
    text = out["choices"][0]["message"]["content"] or ""
    completion = int(usage["completion_tokens"])
    return RunResult(
        engine="llama-cpp-python",
        mode="constrained",
        case=case.name,
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=completion,
        decode_tokens=max(0, completion - 1),
        decode_s=max(0.0, wall_s - prefill_s),
        wall_s=wall_s,
        finish_reason=out["choices"][0]["finish_reason"],
        valid_json=schema_valid(text, case.schema),
        text=text,
    )


def bench_llama_cpp_python(gguf: Path, cases: Sequence[Case], max_tokens: int) -> tuple[list[RunResult], list[Skipped]]:
    """Stage (2): `llama_cpp.Llama` with its JSON-schema response_format; freed before returning."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    results: list[RunResult] = []
    skipped: list[Skipped] = []
    try:
        warm = next((case for case in cases if gbnf_problem(llm, case.schema) is None), None)
        if warm is not None:
            llama_cpp_run(llm, warm, WARMUP_TOKENS)
        for case in cases:
            problem = gbnf_problem(llm, case.schema)
            if problem is not None:
                skipped.append(Skipped(case.name, problem))
                print(f"  llama-cpp-python  {case.name:<28} skipped: {problem}", flush=True)
                continue
            result = llama_cpp_run(llm, case, max_tokens)
            results.append(result)
            print_progress(result)
    finally:
        llm.close()
        del llm
        gc.collect()
    return results, skipped


# --------------------------------------------------------------------------------------------- stage 3: compile time


@dataclass
class CompileTimes:
    """Per-schema compile times in ms: grammar (build + validate against the tokenizer) and matcher."""

    grammar_ms: list[float] = field(default_factory=list)
    matcher_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    failures: list[Skipped] = field(default_factory=list)


def build_tokenizer(model: LlamaModel) -> llguidance.LLTokenizer:
    """The llguidance tokenizer the engine builds, once (the binding it calls warns on every token)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return llguidance.llamacpp.lltokenizer_from_vocab(model.vocab)


def bench_compile(gguf: Path, corpus: Sequence[Case]) -> CompileTimes:
    """Stage (3): every schema on a fresh `GrammarCache`, so nothing is a cache hit; one untimed warm-up first."""
    model = LlamaModel(gguf)
    times = CompileTimes()
    try:
        tokenizer = build_tokenizer(model)
        GrammarCache(tokenizer).matcher(JsonOutput(schema={"type": "object"}))
        for case in corpus:
            cache = GrammarCache(tokenizer)
            constraint = JsonOutput(schema=case.schema)
            start = time.perf_counter()
            try:
                cache.grammar_for(constraint)
                built = time.perf_counter()
                cache.matcher(constraint)  # the grammar is now a cache hit: this times LLMatcher construction
            except InvalidRequestError as exc:
                times.failures.append(Skipped(case.name, str(exc)[:200]))
                continue
            except Exception as exc:  # a bug is reported per schema, not allowed to end the run
                times.failures.append(Skipped(case.name, f"{type(exc).__name__}: {exc}"[:200]))
                continue
            done = time.perf_counter()
            times.grammar_ms.append((built - start) * 1e3)
            times.matcher_ms.append((done - built) * 1e3)
            times.total_ms.append((done - start) * 1e3)
    finally:
        model.close()
    return times


# --------------------------------------------------------------------------------------------- report


@dataclass
class ModeSummary:
    """Summed tokens and decode time of one engine/mode: tok/s weights every token equally."""

    label: str
    runs: int
    completion_tokens: int
    decode_tokens: int
    decode_s: float
    forced_tokens: int | None
    forced_decode_tokens: int
    valid: int | None
    truncated: int
    prompt_tokens: int

    @property
    def tokens_per_s(self) -> float | None:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else None

    @property
    def sampled_tokens_per_s(self) -> float | None:
        """Only the tokens that went through masking and sampling, charged with the whole decode time.

        A pessimistic bound on the per-step rate: each sampled step also pays for decoding the tokens the
        grammar forced after it (one multi-token batch), which costs more than a single-token step.
        """
        return (self.decode_tokens - self.forced_decode_tokens) / self.decode_s if self.decode_s > 0 else None


def summarize(label: str, runs: Sequence[RunResult]) -> ModeSummary:
    """Sum a mode's runs (tok/s is total decode tokens over total decode time, not a mean of rates)."""
    forced = [r.forced_tokens for r in runs if r.forced_tokens is not None]
    valid = [r.valid_json for r in runs if r.valid_json is not None]
    return ModeSummary(
        label=label,
        runs=len(runs),
        completion_tokens=sum(r.completion_tokens for r in runs),
        decode_tokens=sum(r.decode_tokens for r in runs),
        decode_s=sum(r.decode_s for r in runs),
        forced_tokens=sum(forced) if forced else None,
        forced_decode_tokens=sum(r.forced_decode_tokens for r in runs),
        valid=sum(valid) if valid else None,
        truncated=sum(1 for r in runs if r.finish_reason == "length"),
        prompt_tokens=sum(r.prompt_tokens for r in runs),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_progress(result: RunResult) -> None:
    """One line per run, so a slow stage shows it is alive."""
    extra = "" if result.forced_tokens is None else f" forced {result.forced_tokens:>3}"
    valid = "" if result.valid_json is None else f" valid={result.valid_json!s:<5}"
    print(
        f"  {result.engine:<16} {result.mode:<11} {result.case:<28} prompt {result.prompt_tokens:>4}"
        f"  out {result.completion_tokens:>3} ({result.finish_reason})  {fmt(result.tokens_per_s):>6} tok/s"
        f"{extra}{valid}",
        flush=True,
    )


def print_summaries(summaries: Sequence[ModeSummary]) -> None:
    print(
        f"\n{'engine / mode':<36} {'runs':>4} {'prompt':>7} {'out tok':>7} {'decode tok':>10} {'decode s':>8} "
        f"{'tok/s':>7} {'sampled':>7} {'forced':>7} {'valid':>6} {'length':>6}"
    )
    for s in summaries:
        forced = "-" if s.forced_tokens is None else f"{s.forced_tokens / max(1, s.completion_tokens):.0%}"
        valid = "-" if s.valid is None else f"{s.valid}/{s.runs}"
        sampled = fmt(s.sampled_tokens_per_s) if s.forced_tokens is not None else "-"
        print(
            f"{s.label:<36} {s.runs:>4} {s.prompt_tokens:>7} {s.completion_tokens:>7} {s.decode_tokens:>10} "
            f"{s.decode_s:>8.2f} {fmt(s.tokens_per_s):>7} {sampled:>7} {forced:>7} {valid:>6} {s.truncated:>6}"
        )


def print_compile(times: CompileTimes, corpus_size: int) -> None:
    print(f"\nGrammar compile time over the corpus ({len(times.total_ms)}/{corpus_size} schemas compiled), ms:")
    print(f"{'':<28} {'p50':>7} {'p95':>7} {'max':>7}")
    for label, values in (
        ("grammar_for (fresh cache)", times.grammar_ms),
        ("LLMatcher construction", times.matcher_ms),
        ("total", times.total_ms),
    ):
        print(
            f"{label:<28} {fmt(percentile(values, 0.5), '.2f'):>7} {fmt(percentile(values, 0.95), '.2f'):>7} "
            f"{fmt(max(values) if values else None, '.2f'):>7}"
        )
    for failure in times.failures:
        print(f"  could not compile {failure.case}: {failure.reason}")


def compute_ratios(
    free: ModeSummary, constrained: ModeSummary, common: ModeSummary, lcp: ModeSummary
) -> list[dict[str, Any]]:
    """The two goals, plus the first ratio without fast-forwarded tokens (information: the cost of masking).

    The llama-cpp-python ratio uses only the schemas both engines ran.
    """
    return [
        {
            "name": "Galerne constrained / free (decode tok/s)",
            "value": ratio(constrained.tokens_per_s, free.tokens_per_s),
            "goal": GOAL_CONSTRAINED_VS_FREE,
        },
        {
            "name": "  the same, sampled tokens only (info)",
            "value": ratio(constrained.sampled_tokens_per_s, free.sampled_tokens_per_s),
            "goal": None,
        },
        {
            "name": "Galerne constrained / llama-cpp-python grammar",
            "value": ratio(common.tokens_per_s, lcp.tokens_per_s),
            "goal": GOAL_VS_LLAMA_CPP_PYTHON,
        },
    ]


def print_ratios(ratios: Sequence[dict[str, Any]]) -> None:
    print(f"\n{'ratio':<48} {'value':>7} {'goal':>7}  verdict")
    for item in ratios:
        value, goal = item["value"], item["goal"]
        if goal is None:
            print(f"{item['name']:<48} {fmt(value, '.2f'):>7} {'-':>7}")
            continue
        verdict = "-" if value is None else ("MET" if value >= goal else "MISSED")
        print(f"{item['name']:<48} {fmt(value, '.2f'):>7} {'>= ' + format(goal, 'g'):>7}  {verdict}")


def print_loads(loads: dict[str, float | None]) -> None:
    shown = ", ".join(f"{label} {fmt(None if s is None else s * 100, '.0f')}%" for label, s in loads.items())
    busy = any(s is not None and s >= BUSY_WARN for s in loads.values())
    print(f"\nCPU used by other processes during each stage: {shown}" + ("  BUSY: rerun" if busy else ""))


# --------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} schemas instead of {FULL_CASES}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure and output here")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="per request (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    gguf = default_catalog().default_entry().gguf_path()
    corpus = load_corpus()
    cases = pick_cases(corpus, QUICK_CASES if args.quick else FULL_CASES)
    print(
        f"Structured output: {gguf.name}, {N_THREADS} threads, greedy, max_tokens {args.max_tokens}, "
        f"{len(cases)} of {len(corpus)} schemas, os.cpu_count()={os.cpu_count()}",
        flush=True,
    )
    loads: dict[str, float | None] = {}

    print("\n(1) Galerne engine, single stream, free and constrained alternating", flush=True)
    with measured_stage("(1)", loads):
        galerne = bench_galerne(gguf, cases, args.max_tokens)
    gc.collect()
    print("\n(2) llama-cpp-python, response_format json_object + schema", flush=True)
    with measured_stage("(2)", loads):
        lcp_runs, skipped = bench_llama_cpp_python(gguf, cases, args.max_tokens)
    print("\n(3) grammar compile time, whole corpus", flush=True)
    with measured_stage("(3)", loads):
        compile_times = bench_compile(gguf, corpus)

    free = summarize("Galerne free", [r for r in galerne if r.mode == "free"])
    constrained_runs = [r for r in galerne if r.mode == "constrained"]
    constrained = summarize("Galerne constrained", constrained_runs)
    ran = {r.case for r in lcp_runs}
    common = summarize(f"Galerne constrained ({len(ran)} common)", [r for r in constrained_runs if r.case in ran])
    lcp = summarize("llama-cpp-python grammar", lcp_runs)
    summaries = [free, constrained, common, lcp]

    print_summaries(summaries)
    print(f"llama-cpp-python skipped {len(skipped)} of {len(cases)} schemas (converter raised or GBNF rejected)")
    print_compile(compile_times, len(corpus))
    ratios = compute_ratios(free, constrained, common, lcp)
    print_ratios(ratios)
    print_loads(loads)
    print(f"elapsed {time.monotonic() - started:.0f} s")

    if args.json is not None:
        payload = {
            "model": str(gguf),
            "threads": N_THREADS,
            "max_tokens": args.max_tokens,
            "cases": [case.name for case in cases],
            "summaries": [
                {
                    **dataclasses.asdict(s),
                    "tokens_per_s": s.tokens_per_s,
                    "sampled_tokens_per_s": s.sampled_tokens_per_s,
                }
                for s in summaries
            ],
            "ratios": ratios,
            "runs": [{**dataclasses.asdict(r), "tokens_per_s": r.tokens_per_s} for r in [*galerne, *lcp_runs]],
            "llama_cpp_python_skipped": [dataclasses.asdict(s) for s in skipped],
            "compile_ms": dataclasses.asdict(compile_times),
            "other_cpu_share": loads,
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
