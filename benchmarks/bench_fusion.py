"""Loops outside the GEMMs of a training step, one per statement against the fused ones.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_fusion                  # the four MLPs, momentum
    .venv/bin/python -m benchmarks.bench_fusion --workloads 3    # the 1024-wide network

For each of ``benchmarks.bench_llvm``'s MLPs (float32, SGD with momentum 0.9, as in
``benchmarks.bench_peer_table``): the elementwise loops of the LLVM backend's step over
at least ``--large`` elements, and the bytes they load and store (each full-shape
buffer a loop reads from memory or writes counted once), with one loop per ``Map`` /
``Reduce`` statement and with the loop nests of ``codegen.llvm.fusion``. A count, not
a timing: the same on any machine, however busy.
"""

from __future__ import annotations

import argparse

import sympy as sp

from benchmarks.bench_llvm import WORKLOADS
from benchmarks.graphs import mlp_graph, sgd_step
from codegen.ir import Map, Reduce
from codegen.llvm.fusion import Fused, domain_of, fuse_loops
from codegen.llvm.kernels import broadcast_kind
from codegen.llvm.module import make_layout


def traffic(units, batch: int, large: int) -> tuple[int, int]:
    """(elementwise loops over >= ``large`` elements, bytes they load or store in float32)."""
    loops = moved = 0
    for u in units:
        members = u.members if isinstance(u, Fused) else (u,)
        stored = u.stored if isinstance(u, Fused) else (True,)
        if not all(isinstance(m, (Map, Reduce)) for m in members):
            continue
        domain = domain_of(members[0])
        rows, cols = (
            int(sp.sympify(d).subs(dict.fromkeys(sp.sympify(d).free_symbols, batch)))
            for d in domain
        )
        if rows * cols < large:
            continue
        made = {m.out.name for m in members}
        loaded = {
            v.name
            for m in members
            for _, v in m.args
            if broadcast_kind(v, domain) == "full" and v.name not in made
        }
        written = {m.out.name for m, keep in zip(members, stored) if isinstance(m, Map) and keep}
        loops += 1
        moved += (len(loaded) + len(written)) * rows * cols * 4
    return loops, moved


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="*", type=int, default=list(range(len(WORKLOADS))))
    ap.add_argument("--large", type=int, default=1 << 14, help="elements (kernels.CHUNK)")
    args = ap.parse_args(argv)
    print(
        "| workload | loops, one per statement | MiB | loops, fused | MiB | MiB fused / unfused |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, (name, (sizes, activation, output, batch, _)) in enumerate(WORKLOADS.items()):
        if k not in args.workloads:
            continue
        graph = mlp_graph(sizes, activation, output)
        program = sgd_step(graph, backend="numpy", dtype="float32", momentum=0.9).program
        layout = make_layout(program)
        plain = traffic(program.body, batch, args.large)
        fused = traffic(fuse_loops(program, layout.slot_of, layout.body), batch, args.large)
        mib = [b / 2**20 for b in (plain[1], fused[1])]
        ratio = f"{fused[1] / plain[1]:.2f}" if plain[1] else "-"
        print(f"| {name} | {plain[0]} | {mib[0]:.1f} | {fused[0]} | {mib[1]:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
