"""symgrad.nn.recent.Recent: made once per key, the least recently used dropped beyond its limit."""

from symgrad.nn.recent import Recent


def test_a_value_is_made_once_and_the_least_recently_used_goes_first():
    made = []
    table = Recent(2)

    def get(key):
        return table.get(key, lambda: made.append(key) or key * 10)

    assert [get(1), get(2), get(1)] == [10, 20, 10]
    assert made == [1, 2]
    get(3)  # 2 is now the least recently used
    assert table.keys() == [1, 3] and len(table) == 2
    get(2)
    assert made == [1, 2, 3, 2] and table.keys() == [3, 2]


def test_a_failed_make_keeps_nothing():
    table = Recent(4)

    def fail():
        raise ValueError("bad model")

    try:
        table.get("k", fail)
    except ValueError:
        pass
    assert len(table) == 0
    assert table.get("k", lambda: 1) == 1
