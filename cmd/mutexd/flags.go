package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/mutexd/mutexd/internal/duration"
)

// durationValue is a duration flag that reads what the API reads: a Go
// duration or whole seconds ("--ttl 30" is 30s, as "ttl=30" is). It keeps
// the text as typed, so an error can quote it back. String returns the Go
// form, so pflag's GetDuration still works on it.
type durationValue struct {
	d     time.Duration
	typed string
}

func (v *durationValue) Set(s string) error {
	d, err := duration.Parse(s)
	if err != nil {
		return err
	}
	v.d, v.typed = d, s
	return nil
}

func (v *durationValue) String() string { return v.d.String() }
func (v *durationValue) Type() string   { return "duration" }

// durationFlag defines a duration flag that takes whole seconds too.
func durationFlag(f *pflag.FlagSet, name string, def time.Duration, usage string) {
	f.Var(&durationValue{d: def}, name, usage)
}

// typedDuration returns a duration flag's value and the text the user
// typed for it (its default, formatted, when it was not given).
func typedDuration(f *pflag.FlagSet, name string) (time.Duration, string) {
	v := f.Lookup(name).Value.(*durationValue)
	if v.typed == "" {
		return v.d, duration.Format(v.d)
	}
	return v.d, v.typed
}
