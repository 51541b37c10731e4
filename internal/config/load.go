package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/mutexd/mutexd/internal/duration"
)

// EnvPrefix prefixes every environment variable: lock.default_ttl is read
// from MUTEXD_LOCK_DEFAULT_TTL.
const EnvPrefix = "MUTEXD"

// Flags are the command-line flags that override configuration keys.
var flagKeys = map[string]string{
	"listen":    "listen",
	"log-level": "log.level",
}

// AddFlags defines --config and the flags that override keys on fs.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "path of a YAML configuration file")
	fs.String("listen", "", "listen address host:port (key listen)")
	fs.String("log-level", "", "debug, info, warn or error (key log.level)")
}

// Load builds the configuration from the defaults, the YAML file named by
// the --config flag (if set), MUTEXD_* environment variables and the flags
// defined by AddFlags that were set on fs (which may be nil). The result
// is validated. Every error wraps ErrInvalid and names the key at fault.
func Load(fs *pflag.FlagSet) (Config, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	fields := leaves(reflect.ValueOf(Default()), "")
	for _, f := range fields {
		v.SetDefault(f.key, f.def.Interface())
	}
	if fs != nil {
		if path, _ := fs.GetString("config"); path != "" {
			v.SetConfigFile(path)
			v.SetConfigType("yaml")
			if err := v.ReadInConfig(); err != nil {
				return Config{}, fmt.Errorf("%w: %s: %s", ErrInvalid, path, oneLine(err))
			}
			if err := rejectUnknown(v, fields, path); err != nil {
				return Config{}, err
			}
		}
		for flag, key := range flagKeys {
			if f := fs.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
	}
	var c Config
	if err := v.UnmarshalExact(&c, viper.DecodeHook(decodeHooks)); err != nil {
		return Config{}, decodeError(err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// clientEnv names the MUTEXD_ variables that are not configuration keys:
// the command-line client's and those mutexd lock gives its command.
var clientEnv = []string{"ADDR", "TOKEN", "LEASE_TOKEN", "KEY", "FENCE", "PREVIOUS_OUTCOME", "PREVIOUS_FENCE", "URL"}

// UnknownEnv returns the names of the MUTEXD_ variables in environ
// ("NAME=value" pairs, as os.Environ gives them) that match no
// configuration key: a typo such as MUTEXD_LOCK_DEFAULT_TLL would
// otherwise leave the default in force without a word.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, k := range Keys() {
		known[strings.ToUpper(strings.ReplaceAll(k, ".", "_"))] = true
	}
	for _, k := range clientEnv {
		known[k] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if rest, ok := strings.CutPrefix(name, EnvPrefix+"_"); ok && !known[rest] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	return unknown
}

// Keys returns every configuration key, dotted, in definition order.
func Keys() []string {
	var keys []string
	for _, f := range leaves(reflect.ValueOf(Default()), "") {
		keys = append(keys, f.key)
	}
	return keys
}

type leaf struct {
	key   string
	index []int
	def   reflect.Value
}

// leaves lists the non-struct fields of a config struct with their dotted keys.
func leaves(v reflect.Value, prefix string) []leaf {
	var out []leaf
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		key := prefix + sf.Tag.Get("mapstructure")
		if sf.Type.Kind() == reflect.Struct {
			for _, l := range leaves(v.Field(i), key+".") {
				l.index = append([]int{i}, l.index...)
				out = append(out, l)
			}
			continue
		}
		out = append(out, leaf{key: key, index: []int{i}, def: v.Field(i)})
	}
	return out
}

// rejectUnknown fails on a key in the file that Config does not have: a
// typo must not silently leave a default in force.
func rejectUnknown(v *viper.Viper, fields []leaf, path string) error {
	known, leafKeys := map[string]bool{}, map[string]bool{}
	for _, f := range fields {
		known[f.key], leafKeys[f.key] = true, true
		for p := f.key; strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			known[p] = true
		}
	}
	var unknown []string
	for _, k := range v.AllKeys() {
		if known[k] && !leafKeys[k] {
			// A section such as lock given a single value: every key in it
			// would read as unset, so say so rather than blame one of them.
			return fmt.Errorf("%w: %s: %s: want a map of keys (such as %s.%s), not a single value", ErrInvalid, path, k, k, firstUnder(fields, k))
		}
		if known[k] {
			continue
		}
		// A map where a value belongs: name the key, not the map's contents
		// (they may be secrets).
		for p := k; strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			if leafKeys[p] {
				return fmt.Errorf("%w: %s: %s: want a single value or a list, not a map", ErrInvalid, path, p)
			}
		}
		unknown = append(unknown, k)
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("%w: %s: unknown key %q", ErrInvalid, path, unknown[0])
	}
	return nil
}

// firstUnder returns the first key in section, without the section's name.
func firstUnder(fields []leaf, section string) string {
	for _, f := range fields {
		if rest, ok := strings.CutPrefix(f.key, section+"."); ok {
			return rest
		}
	}
	return ""
}

// decodeHooks convert what viper holds (YAML values, environment and flag
// strings) to Config's field types more strictly than mapstructure's weak
// typing would: a duration is a Go duration or whole seconds (the API's
// parser), a whole number may have underscores but no base prefix ("010" is
// ten, not eight), a list from the environment is comma-separated.
var decodeHooks = mapstructure.ComposeDecodeHookFunc(durationHook, intHook, boolHook, listHook, peerListHook)

var (
	durationType = reflect.TypeFor[time.Duration]()
	intType      = reflect.TypeFor[int]()
	boolType     = reflect.TypeFor[bool]()
	listType     = reflect.TypeFor[[]string]()
)

func durationHook(_ reflect.Type, to reflect.Type, raw any) (any, error) {
	if to != durationType {
		return raw, nil
	}
	switch x := raw.(type) {
	case time.Duration:
		return x, nil
	case int:
		return time.Duration(x) * time.Second, nil
	case float64:
		return time.Duration(x * float64(time.Second)), nil
	case string:
		if d, err := duration.Parse(strings.TrimSpace(x)); err == nil {
			return d, nil
		}
	}
	return nil, fmt.Errorf("%s", "want a duration such as 30s, 1500ms or 2m, or whole seconds, got "+quoted(raw))
}

func intHook(_ reflect.Type, to reflect.Type, raw any) (any, error) {
	if to != intType {
		return raw, nil
	}
	switch x := raw.(type) {
	case int:
		return x, nil
	case float64:
		if x == float64(int(x)) {
			return int(x), nil
		}
	case string:
		if n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(x), "_", "")); err == nil {
			return n, nil
		}
	}
	return nil, fmt.Errorf("%s", "want a whole number, got "+quoted(raw))
}

func boolHook(_ reflect.Type, to reflect.Type, raw any) (any, error) {
	if to != boolType {
		return raw, nil
	}
	switch x := raw.(type) {
	case bool:
		return x, nil
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s", "want true or false, got "+quoted(raw))
}

// listHook reads a YAML list of strings, or a comma-separated string from
// the environment. An empty list is nil, like the default. Its error never
// quotes the value: lists may hold secrets.
func listHook(_ reflect.Type, to reflect.Type, raw any) (any, error) {
	if to != listType {
		return raw, nil
	}
	var out []string
	switch x := raw.(type) {
	case nil:
	case []string:
		out = append(out, x...)
	case []any:
		for _, v := range x {
			s, ok := v.(string)
			if !ok {
				return nil, errors.New("want a list of strings")
			}
			out = append(out, s)
		}
	case string:
		for s := range strings.SplitSeq(x, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	default:
		return nil, errors.New("want a list of strings")
	}
	return out, nil
}

func quoted(raw any) string {
	if s, ok := raw.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(raw)
}

// decodeError turns mapstructure's error (a list of per-field errors) into
// one line naming the first field at fault, in Config's field order.
func decodeError(err error) error {
	var de *mapstructure.DecodeError
	if !errors.As(err, &de) {
		return fmt.Errorf("%w: %s", ErrInvalid, oneLine(err))
	}
	inner := de.Unwrap()
	var ute *mapstructure.UnconvertibleTypeError
	var pe *mapstructure.ParseError
	switch {
	case errors.As(inner, &ute):
		inner = fmt.Errorf("want a %s value", ute.Expected.Type())
	case errors.As(inner, &pe):
		inner = fmt.Errorf("want a %s value", pe.Expected.Type())
	}
	return fmt.Errorf("%w: %s: %w", ErrInvalid, de.Name(), inner)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
