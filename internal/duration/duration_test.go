package duration

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"30", 30 * time.Second, false},
		{"+5", 5 * time.Second, false},
		{"-5", -5 * time.Second, false},
		{"0", 0, false},
		{"30s", 30 * time.Second, false},
		{"1500ms", 1500 * time.Millisecond, false},
		{"2m", 2 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"", 0, true},
		{"30x", 0, true},
		{"1.5", 0, true}, // fractional seconds need a unit
		{"99999999999999999999", 0, true},
		{"4611686019", 0, true}, // past 2^62 ns
		{"4611686018", 4611686018 * time.Second, false},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	for _, s := range []string{"30", "30s", "1500ms"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Parse(s) }); n != 0 {
			t.Errorf("Parse(%q): %v allocations, want 0", s, n)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := map[time.Duration]string{
		time.Hour:               "1h",
		90 * time.Minute:        "1h30m",
		time.Minute:             "1m",
		90 * time.Second:        "1m30s",
		1500 * time.Millisecond: "1.5s",
		0:                       "0s",
	}
	for d, want := range tests {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", d, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"30", "30s", "1h2m3.5s", "-1", "+9", "1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		if wholeNumber(s) && d%time.Second != 0 {
			t.Fatalf("Parse(%q) = %v: a bare number must be whole seconds", s, d)
		}
		if !wholeNumber(s) {
			if want, err := time.ParseDuration(s); err != nil || want != d {
				t.Fatalf("Parse(%q) = %v, time.ParseDuration = %v, %v", s, d, want, err)
			}
		}
	})
}
