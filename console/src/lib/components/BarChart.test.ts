import { render, screen } from "@testing-library/svelte";
import { describe, expect, it } from "vitest";
import BarChart from "./BarChart.svelte";

describe("BarChart", () => {
  it("draws one stacked bar per label and gives screen readers the figures as a table", () => {
    render(BarChart, {
      props: {
        title: "Updates",
        labels: ["Nov 29", "Nov 30", "Dec 1"],
        series: [{ name: "found", color: "#888" }, { name: "installed", color: "#080" }],
        values: [[3, 0, 5], [1, 2, 0]],
      },
    });
    expect(screen.getByRole("img", { name: "Updates: 11 in all" })).toBeTruthy();
    // Zero-height parts are not drawn.
    expect(document.querySelectorAll("rect")).toHaveLength(4);
    const rows = screen.getAllByRole("row");
    expect(rows.map((r) => r.textContent)).toEqual(["Whenfoundinstalled", "Nov 2931", "Nov 3002", "Dec 150"]);
    expect(document.querySelector(".legend")?.textContent).toBe("found 8installed 3");
  });
});
