package main

import (
	"image/color"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var systemColors = map[string]color.Color{
	"mutexd": color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"noop":   color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
	"fifo":   color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"redis":  color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"etcd":   color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

var systemOrder = []string{"mutexd", "noop", "fifo", "redis", "etcd"}

// drawChart writes a 2×2 PNG: throughput and p99 latency versus clients,
// uncontended on top, contended (one key) below, one line per system.
func drawChart(r *report, path string) error {
	type panel struct {
		title, ylabel, kind string
		value               func(*cell) float64
		logY                bool
	}
	msOf := func(d time.Duration) float64 { return float64(d) / 1e6 }
	panels := [][2]panel{
		{
			{"Uncontended: cycles/s (acquire + release)", "cycles/s", "uncontended", func(c *cell) float64 { return c.cycles }, false},
			{"Uncontended: cycle p99", "ms (log)", "uncontended", func(c *cell) float64 { return msOf(c.cycP99) }, true},
		},
		{
			{"One key: hand-offs/s (owner changes)", "hand-offs/s (log)", "contended", func(c *cell) float64 { return c.handoffs }, true},
			{"One key: wait p99", "ms (log)", "contended", func(c *cell) float64 { return msOf(c.acqP99) }, true},
		},
	}
	plots := make([][]*plot.Plot, 2)
	for i, row := range panels {
		for _, pn := range row {
			p := plot.New()
			p.Title.Text = pn.title
			p.X.Label.Text = "clients"
			p.Y.Label.Text = pn.ylabel
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 1, Label: "1"}, {Value: 4, Label: "4"}, {Value: 16, Label: "16"}, {Value: 64, Label: "64"}})
			if pn.logY {
				p.Y.Scale = plot.LogScale{}
				p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
			}
			p.Legend.Top = true
			p.Legend.Left = pn.kind == "contended" && !pn.logY
			for _, sys := range systemOrder {
				var pts plotter.XYs
				for _, sc := range r.scs {
					if sc.Kind != pn.kind {
						continue
					}
					c := r.cell(sc.Name, sys)
					if c == nil || c.n == 0 {
						continue
					}
					v := pn.value(c)
					if pn.logY && v <= 0 {
						continue
					}
					pts = append(pts, plotter.XY{X: float64(sc.Clients), Y: v})
				}
				if len(pts) == 0 {
					continue
				}
				line, points, err := plotter.NewLinePoints(pts)
				if err != nil {
					return err
				}
				line.Color, points.Color = systemColors[sys], systemColors[sys]
				line.Width = vg.Points(2)
				if sys == "mutexd" {
					line.Width = vg.Points(3)
				}
				points.Shape = draw.CircleGlyph{}
				p.Add(line, points)
				p.Legend.Add(sys, line, points)
			}
			plots[i] = append(plots[i], p)
		}
	}
	img := vgimg.New(vg.Points(1000), vg.Points(700))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 2, PadX: vg.Points(20), PadY: vg.Points(20), PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
