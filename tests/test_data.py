"""`load_csv_table`: good tables load; each bad one names its line and column."""

import gzip

import numpy as np
import pytest

from adjoint._data import load_csv_table
from adjoint._errors import DataError

GOOD = """\
# Hudson's Bay Company pelts (thousands), after Odum (1953).
# Columns: year, hare, lynx.
year,hare,lynx
1900,30,4
1901,47.2,6.1

1902,70.2,9.8
"""


def _write(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load(path, **options):
    options.setdefault("time_column", "year")
    return load_csv_table(path, ["year", "hare", "lynx"], **options)


# ---- good tables ----


def test_good_table_returns_float_columns_and_header(tmp_path):
    table = _load(
        _write(tmp_path, GOOD),
        positive_columns=["hare", "lynx"],
        integer_columns=["year"],
    )

    assert set(table) == {"year", "hare", "lynx", "__header__"}
    np.testing.assert_array_equal(table["year"], [1900.0, 1901.0, 1902.0])
    np.testing.assert_array_equal(table["hare"], [30.0, 47.2, 70.2])
    assert all(table[name].dtype == np.float64 for name in ("year", "hare", "lynx"))
    assert table["__header__"] == [
        "Hudson's Bay Company pelts (thousands), after Odum (1953).",
        "Columns: year, hare, lynx.",
    ]


def test_extra_columns_are_ignored_and_time_column_always_returned(tmp_path):
    path = _write(tmp_path, "t, a ,b,note\n0,1,2,x\n1,3,4,y\n")

    table = load_csv_table(path, ["a"], time_column="t")

    assert set(table) == {"t", "a", "__header__"}
    np.testing.assert_array_equal(table["a"], [1.0, 3.0])
    assert table["__header__"] == []


def test_gzip_table_and_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "table.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("\ufeff" + GOOD)

    table = _load(path)

    np.testing.assert_array_equal(table["lynx"], [4.0, 6.1, 9.8])


def test_quoted_fields_and_windows_line_endings(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b'year,"hare",lynx\r\n1900,"1.5",2\r\n1901,3,4\r\n')

    table = _load(path)

    np.testing.assert_array_equal(table["hare"], [1.5, 3.0])


# ---- bad files ----


def test_missing_file_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _load(tmp_path / "absent.csv")


def test_directory_raises(tmp_path):
    with pytest.raises(DataError, match="is not a file"):
        _load(tmp_path)


def test_header_only_comments_raises(tmp_path):
    with pytest.raises(DataError, match="no header row"):
        _load(_write(tmp_path, "# nothing but provenance\n\n"))


def test_no_data_rows_raises(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        _load(_write(tmp_path, "# provenance\nyear,hare,lynx\n"))


def test_missing_columns_are_named_with_the_columns_found(tmp_path):
    path = _write(tmp_path, "# provenance\nyear,hares\n1900,1\n")

    with pytest.raises(DataError) as info:
        _load(path)

    message = str(info.value)
    assert "lacks required column 'hare', 'lynx'" in message
    assert "line 2 has 'year', 'hares'" in message


def test_duplicate_column_names_raise(tmp_path):
    with pytest.raises(DataError, match="names column 'hare' more than once"):
        _load(_write(tmp_path, "year,hare,hare,lynx\n1900,1,2,3\n"))


def test_non_numeric_value_names_line_and_column(tmp_path):
    text = GOOD.replace("1901,47.2,6.1", "1901,lots,6.1")

    with pytest.raises(DataError) as info:
        _load(_write(tmp_path, text))

    assert "line 5, column 'hare' holds 'lots'" in str(info.value)
    assert "not a finite number" in str(info.value)


@pytest.mark.parametrize("token", ["inf", "-Infinity", "1e400"])
def test_non_finite_value_names_line_and_column(tmp_path, token):
    text = GOOD.replace("1902,70.2,9.8", f"1902,70.2,{token}")

    with pytest.raises(DataError, match=r"line 7, column 'lynx' holds .*not a finite"):
        _load(_write(tmp_path, text))


@pytest.mark.parametrize("token", ["", "  ", "NA", "nan", "-"])
def test_missing_value_names_line_and_column(tmp_path, token):
    text = GOOD.replace("1901,47.2,6.1", f"1901,{token},6.1")

    with pytest.raises(DataError, match="line 5 has no value in column 'hare'"):
        _load(_write(tmp_path, text))


def test_short_row_is_a_missing_value(tmp_path):
    text = GOOD.replace("1902,70.2,9.8", "1902,70.2")

    with pytest.raises(DataError, match="line 7 has no value in column 'lynx'"):
        _load(_write(tmp_path, text))


def test_long_row_raises_naming_the_line(tmp_path):
    text = GOOD.replace("1900,30,4", "1900,30,4,5")

    with pytest.raises(DataError, match="line 4 has 4 fields but the header on line 3"):
        _load(_write(tmp_path, text))


def test_time_order_break_names_both_lines(tmp_path):
    text = GOOD.replace("1902,70.2,9.8", "1899,70.2,9.8")

    with pytest.raises(DataError) as info:
        _load(_write(tmp_path, text))

    message = str(info.value)
    assert "line 7 has year = 1899 after 1901 on line 5" in message
    assert "increase strictly" in message


def test_duplicate_time_names_both_lines(tmp_path):
    text = GOOD.replace("1902,70.2,9.8", "1901,70.2,9.8")

    with pytest.raises(DataError, match="line 7 repeats year = 1901 from line 5"):
        _load(_write(tmp_path, text))


@pytest.mark.parametrize("value", ["0", "-3.5"])
def test_non_positive_value_names_line_column_and_value(tmp_path, value):
    text = GOOD.replace("1901,47.2,6.1", f"1901,47.2,{value}")

    with pytest.raises(DataError) as info:
        _load(_write(tmp_path, text), positive_columns=["lynx"])

    message = str(info.value)
    assert f"line 5, column 'lynx' holds {float(value):g}" in message
    assert "log-scale fit needs positive values" in message


def test_non_positive_value_allowed_outside_positive_columns(tmp_path):
    text = GOOD.replace("1901,47.2,6.1", "1901,47.2,0")

    table = _load(_write(tmp_path, text), positive_columns=["hare"])

    assert table["lynx"][1] == 0.0


def test_fractional_value_in_integer_column_names_line_and_column(tmp_path):
    text = GOOD.replace("1901,47.2,6.1", "1901.5,47.2,6.1")

    with pytest.raises(DataError, match="line 5, column 'year' holds 1901.5"):
        _load(_write(tmp_path, text), integer_columns=["year"])


def test_messages_name_the_file_and_are_one_sentence(tmp_path):
    path = _write(tmp_path, GOOD.replace("1901,47.2,6.1", "1901,x,6.1"))

    with pytest.raises(DataError) as info:
        _load(path)

    message = str(info.value)
    assert str(path) in message
    assert message.endswith(".") and "\n" not in message


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---- mistakes of the caller ----


def test_positive_column_not_requested_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="`positive_columns` names 'fox'") as info:
        _load(_write(tmp_path, GOOD), positive_columns=["fox"])

    assert not isinstance(info.value, DataError)
