// Package peers drives the lock services mutexd is compared with through
// the same load generator (loadgen.Target): Redis with the usual SET NX PX
// lock, a Lua compare-and-delete release and a spinning retry, and etcd's
// concurrency.Mutex. Each session holds exactly one connection.
package peers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// Redis is a Redis server at Addr (host:port).
type Redis struct{ Addr string }

var _ loadgen.Target = Redis{}

// Name returns "redis".
func (Redis) Name() string { return "redis" }

// releaseScript deletes the key only if it still holds our token: the
// standard single-instance Redis lock release.
var releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// Open connects one client with a pool of exactly one connection.
func (r Redis) Open(ctx context.Context, id int) (loadgen.Session, error) {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, PoolSize: 1, MinIdleConns: 1, MaxRetries: -1,
		DialTimeout: 5 * time.Second, ReadTimeout: -1, WriteTimeout: -1})
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, err
	}
	if err := releaseScript.Load(ctx, c).Err(); err != nil {
		c.Close()
		return nil, err
	}
	return &redisSession{c: c, prefix: "c" + strconv.Itoa(id) + "-"}, nil
}

type redisSession struct {
	c      *redis.Client
	prefix string
	seq    uint64
}

// Acquire spins on SET NX PX until it succeeds or wait passes: Redis has
// no queue, so whoever asks right after a release wins.
func (s *redisSession) Acquire(ctx context.Context, key string, ttl, wait time.Duration) (loadgen.Lease, error) {
	s.seq++
	tok := s.prefix + strconv.FormatUint(s.seq, 10)
	deadline := time.Now().Add(wait)
	for {
		ok, err := s.c.SetNX(ctx, key, tok, ttl).Result()
		if err != nil {
			if ctx.Err() != nil {
				return loadgen.Lease{}, ctx.Err()
			}
			return loadgen.Lease{}, &loadgen.CodeError{Code: "redis", Err: err}
		}
		if ok {
			return loadgen.Lease{Key: key, Token: tok}, nil
		}
		if wait == 0 || time.Now().After(deadline) {
			return loadgen.Lease{}, loadgen.ErrBusy
		}
	}
}

func (s *redisSession) Release(ctx context.Context, l loadgen.Lease) error {
	n, err := releaseScript.Run(ctx, s.c, []string{l.Key}, l.Token).Int()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &loadgen.CodeError{Code: "redis", Err: err}
	}
	if n != 1 {
		return &loadgen.CodeError{Code: "not_holder", Err: errors.New("the key no longer holds our token")}
	}
	return nil
}

func (s *redisSession) Close() error { return s.c.Close() }

// Etcd is an etcd server at Endpoint (http://host:port).
type Etcd struct{ Endpoint string }

var _ loadgen.Target = Etcd{}

// Name returns "etcd".
func (Etcd) Name() string { return "etcd" }

// Open connects one client (one gRPC connection) with its own lease
// session, kept alive by the client. The client logs nothing: the load
// generator counts failures itself, and a failover run would otherwise
// print a warning for every request cut short.
func (e Etcd) Open(ctx context.Context, _ int) (loadgen.Session, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Context: context.WithoutCancel(ctx),
		Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	return &etcdSession{c: c}, nil
}

type etcdSession struct {
	c    *clientv3.Client
	sess *concurrency.Session
	ttl  time.Duration
}

func (s *etcdSession) session(ttl time.Duration) (*concurrency.Session, error) {
	if s.sess != nil && s.ttl == ttl {
		return s.sess, nil
	}
	if s.sess != nil {
		_ = s.sess.Close()
	}
	sess, err := concurrency.NewSession(s.c, concurrency.WithTTL(max(int(ttl/time.Second), 1)))
	if err != nil {
		return nil, err
	}
	s.sess, s.ttl = sess, ttl
	return sess, nil
}

// Acquire queues on the key with concurrency.Mutex (FIFO by creation
// revision); wait 0 uses TryLock.
func (s *etcdSession) Acquire(ctx context.Context, key string, ttl, wait time.Duration) (loadgen.Lease, error) {
	sess, err := s.session(ttl)
	if err != nil {
		return loadgen.Lease{}, &loadgen.CodeError{Code: "etcd", Err: err}
	}
	m := concurrency.NewMutex(sess, "/bench/"+key)
	if wait == 0 {
		err = m.TryLock(ctx)
	} else {
		wctx, cancel := context.WithTimeout(ctx, wait)
		err = m.Lock(wctx)
		cancel()
	}
	switch {
	case err == nil:
		return loadgen.Lease{Key: key, Fence: uint64(m.Header().Revision), Handle: m}, nil
	case errors.Is(err, concurrency.ErrLocked), ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return loadgen.Lease{}, loadgen.ErrBusy
	case ctx.Err() != nil:
		return loadgen.Lease{}, ctx.Err()
	}
	return loadgen.Lease{}, &loadgen.CodeError{Code: "etcd", Err: err}
}

func (s *etcdSession) Release(ctx context.Context, l loadgen.Lease) error {
	m, ok := l.Handle.(*concurrency.Mutex)
	if !ok {
		return &loadgen.CodeError{Code: "bad_lease", Err: fmt.Errorf("lease of %s has no etcd mutex", l.Key)}
	}
	if err := m.Unlock(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &loadgen.CodeError{Code: "etcd", Err: err}
	}
	return nil
}

func (s *etcdSession) Close() error {
	if s.sess != nil {
		_ = s.sess.Close()
	}
	return s.c.Close()
}
