"""The population benchmark runs end to end on tiny sizes; no speed is asserted."""

from benchmarks import bench_population as bench

TINY = "--threads 1 --members 2 --epochs 1 --rounds 1 --rows 64 --dtypes float64"


def test_the_script_runs_tiny_and_its_candidates_agree(capsys):
    bench.main(TINY.split())
    lines = capsys.readouterr().out.splitlines()
    assert "**2 members, 1 epochs, 1 thread(s)**" in lines
    header = (
        "| dtype | 2 sequential fits (s) | population of 2 (s) | speed-up | weights bit-equal |"
    )
    assert any(line.startswith(header) for line in lines)
    row = next(line for line in lines if line.startswith("| float64 |")).split("|")
    assert row[5].strip() == "yes"
    assert row[4].strip().endswith("x") and float(row[4].strip()[:-1]) > 0


def test_the_members_differ_and_each_is_its_sequential_fit():
    x, y = bench.digits(64)
    fns, setup = bench.candidates("float64", 3, x, y, epochs=1)
    assert setup["one model"] > 0 and setup["population"] > 0
    sequential, population = (fn() for fn in fns.values())
    assert len(sequential) == len(population) == 3
    for solo, member in zip(sequential, population):
        assert all((a == b).all() for a, b in zip(solo, member))
    assert not (population[0][0] == population[1][0]).all()
