"""The SVG charts: one bar per point, escaped text, nothing for no data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from smartstart.web.charts import Bar, bars

SVG = "{http://www.w3.org/2000/svg}"


def test_one_bar_per_point_scaled_to_the_largest() -> None:
    chart = bars([Bar("Mon", 5), Bar("Tue", 10), Bar("Wed", 0)], title="Registrations")
    assert chart is not None
    root = ET.fromstring(str(chart))
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == 3
    heights = [float(r.get("height", "0")) for r in rects]
    assert heights[2] == 0 and heights[1] > heights[0] > 0
    assert root.find(f"{SVG}title").text == "Registrations"  # type: ignore[union-attr]
    assert "style" not in str(chart) and "<script" not in str(chart)


def test_labels_are_escaped() -> None:
    chart = bars([Bar("<script>x</script>", 1)], title="a & b")
    assert chart is not None
    assert "<script>" not in str(chart)
    ET.fromstring(str(chart))  # still well-formed


def test_no_points_no_chart() -> None:
    assert bars([], title="nothing") is None
