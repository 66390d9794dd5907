"""The population benchmark runs end to end on tiny sizes; no speed is asserted."""

from benchmarks import bench_population as bench


def test_the_script_runs_tiny_and_its_candidates_agree(capsys):
    bench.main(
        [
            "--threads",
            "1",
            "--members",
            "2",
            "--epochs",
            "1",
            "--rounds",
            "1",
            "--rows",
            "64",
            "--dtypes",
            "float64",
        ]
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "**2 members, 1 epochs, 1 thread(s)**" in lines
    assert (
        "| dtype | 2 sequential fits (s) | population of 2 (s) | speed-up | weights bit-equal |"
        in lines
    )
    row = next(line for line in lines if line.startswith("| float64 |"))
    assert row.endswith("| yes |")


def test_the_members_differ_and_each_is_its_sequential_fit():
    x, y = bench.digits(64)
    fns = bench.candidates("float64", 3, x, y, epochs=1)
    sequential, population = (fn() for fn in fns.values())
    assert len(sequential) == len(population) == 3
    for solo, member in zip(sequential, population):
        assert all((a == b).all() for a, b in zip(solo, member))
    assert not (population[0][0] == population[1][0]).all()
