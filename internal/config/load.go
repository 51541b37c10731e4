package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

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
	dst := reflect.ValueOf(&c).Elem()
	for _, f := range fields {
		if err := set(dst.FieldByIndex(f.index), v.Get(f.key)); err != nil {
			return Config{}, fmt.Errorf("%w: %s: %s", ErrInvalid, f.key, err)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
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

// set converts a raw value from viper (YAML, environment string or flag
// string) to the field's type. A duration is a Go duration string ("30s",
// "1500ms") or a bare number of seconds.
func set(dst reflect.Value, raw any) error {
	switch dst.Interface().(type) {
	case time.Duration:
		d, err := parseDuration(raw)
		if err != nil {
			return err
		}
		dst.SetInt(int64(d))
	case string:
		switch s := raw.(type) {
		case string:
			dst.SetString(s)
		case int, int64, float64, bool:
			dst.SetString(fmt.Sprint(s))
		default:
			return fmt.Errorf("want a string, got %v", raw)
		}
	case int:
		n, err := parseInt(raw)
		if err != nil {
			return err
		}
		dst.SetInt(int64(n))
	case bool:
		b, err := parseBool(raw)
		if err != nil {
			return err
		}
		dst.SetBool(b)
	case []string:
		l, err := parseList(raw)
		if err != nil {
			return err
		}
		dst.Set(reflect.ValueOf(l))
	default:
		return fmt.Errorf("unsupported type %s", dst.Type())
	}
	return nil
}

func parseDuration(raw any) (time.Duration, error) {
	switch x := raw.(type) {
	case time.Duration:
		return x, nil
	case int:
		return time.Duration(x) * time.Second, nil
	case int64:
		return time.Duration(x) * time.Second, nil
	case float64:
		return time.Duration(x * float64(time.Second)), nil
	case string:
		d, err := duration.Parse(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as 30s, 1500ms or 2m", x)
		}
		return d, nil
	}
	return 0, fmt.Errorf("%v is not a duration such as 30s, 1500ms or 2m", raw)
}

func parseInt(raw any) (int, error) {
	switch x := raw.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case float64:
		if x == float64(int(x)) {
			return int(x), nil
		}
	case string:
		s := strings.ReplaceAll(strings.TrimSpace(x), "_", "")
		if n, err := strconv.Atoi(s); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%v is not a whole number", raw)
}

func parseBool(raw any) (bool, error) {
	switch x := raw.(type) {
	case bool:
		return x, nil
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("%v is not true or false", raw)
}

// parseList reads a YAML list of strings, or a comma-separated string from
// the environment. An empty list is nil, like the default. The error never
// quotes the value: lists may hold secrets.
func parseList(raw any) ([]string, error) {
	var out []string
	switch x := raw.(type) {
	case nil:
	case []string:
		out = append(out, x...)
	case []any:
		for _, v := range x {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("want a list of strings")
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
		return nil, fmt.Errorf("want a list of strings")
	}
	return out, nil
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
