package faults

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Network is the fault-injecting network between the nodes: one Proxy in
// front of each inbound port a node's peers dial (its Raft port, and the
// API port followers forward to), and a table of cut directed links.
//
// The peers list must be identical on every node, so a peer's address
// cannot name a per-link proxy; instead each proxy finds which node dialed
// it. On loopback every node's outgoing connection comes from 127.0.0.1, so
// the source address says nothing, but the kernel knows the socket's owner:
// the dialer's port leads to a socket inode in /proc/net/tcp, and that
// inode to the process holding it in /proc/<pid>/fd (our own children, so
// no privilege is needed). Linux only; elsewhere every source is unknown
// and only a node's own inbound links can be cut.
type Network struct {
	// owners returns the running nodes' process ids, by node index.
	owners func() map[int]int

	mu      sync.Mutex // guards the following
	cut     map[[2]int]bool
	proxies []*Proxy
	unknown int // connections whose dialer could not be named
}

// NewNetwork returns a network that names dialers among owners' processes.
func NewNetwork(owners func() map[int]int) *Network {
	return &Network{owners: owners, cut: map[[2]int]bool{}}
}

// Proxy forwards connections to one node's port unless their link is cut.
type Proxy struct {
	net    *Network
	dst    int
	target string
	ln     net.Listener

	mu     sync.Mutex // guards conns and closed
	conns  map[*proxied]bool
	closed bool
	wg     sync.WaitGroup
}

// proxied is one accepted connection: forwarded (upstream set) or held
// unanswered while its link is cut (a black hole, as a real partition).
type proxied struct {
	src      int
	down, up net.Conn
}

func (p *proxied) close() {
	p.down.Close()
	if p.up != nil {
		p.up.Close()
	}
}

// Proxy starts a proxy on a free 127.0.0.1 port that forwards to target,
// node dst's real port.
func (n *Network) Proxy(dst int, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy for node %d: %w", dst, err)
	}
	p := &Proxy{net: n, dst: dst, target: target, ln: ln, conns: map[*proxied]bool{}}
	n.mu.Lock()
	n.proxies = append(n.proxies, p)
	n.mu.Unlock()
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address peers dial instead of the node's own.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		src := p.net.source(c.RemoteAddr(), c.LocalAddr())
		pc := &proxied{src: src, down: c}
		if !p.net.isCut(src, p.dst) {
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			pc.up = up
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			pc.close()
			continue
		}
		p.conns[pc] = true
		p.mu.Unlock()
		if pc.up == nil {
			p.wg.Add(1)
			go func() { defer p.wg.Done(); defer p.forget(pc); io.Copy(io.Discard, pc.down) }()
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); defer p.forget(pc); io.Copy(pc.up, pc.down) }()
		go func() { defer p.wg.Done(); defer p.forget(pc); io.Copy(pc.down, pc.up) }()
	}
}

func (p *Proxy) forget(pc *proxied) {
	pc.close()
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// enforce closes every connection the current cuts condemn: forwarded ones
// on a cut link, and held ones on a healed link (so their dialer
// reconnects instead of waiting on a black hole).
func (p *Proxy) enforce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		if p.net.isCut(pc.src, p.dst) == (pc.up != nil) {
			pc.close()
		}
	}
}

// Close stops the proxy and every connection through it, and waits for its
// goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for pc := range p.conns {
		pc.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Isolate cuts every link between node i and the others, both ways: new
// connections vanish into a black hole and open ones are closed at once.
func (n *Network) Isolate(i, nodes int) {
	var pairs [][2]int
	for j := range nodes {
		if j != i {
			pairs = append(pairs, [2]int{i, j}, [2]int{j, i})
		}
	}
	n.Cut(pairs...)
}

// Cut cuts the directed links (from, to).
func (n *Network) Cut(links ...[2]int) {
	n.mu.Lock()
	for _, l := range links {
		n.cut[l] = true
	}
	n.mu.Unlock()
	n.enforce()
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	clear(n.cut)
	n.mu.Unlock()
	n.enforce()
}

func (n *Network) enforce() {
	n.mu.Lock()
	proxies := append([]*Proxy(nil), n.proxies...)
	n.mu.Unlock()
	for _, p := range proxies {
		p.enforce()
	}
}

// Close closes every proxy.
func (n *Network) Close() {
	n.mu.Lock()
	proxies := n.proxies
	n.proxies = nil
	n.mu.Unlock()
	for _, p := range proxies {
		p.Close()
	}
}

// Unknown is how many connections came from a dialer no proxy could name.
func (n *Network) Unknown() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.unknown
}

// isCut reports whether the link from src (-1: unknown, outside the
// cluster) to dst is cut. A node's own inbound side is cut whatever the
// source when any link into it is, so an isolated node stays isolated even
// from a dialer that could not be named.
func (n *Network) isCut(src, dst int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if src >= 0 {
		return n.cut[[2]int{src, dst}]
	}
	for l := range n.cut {
		if l[1] == dst {
			return true
		}
	}
	return false
}

// source names the node that dialed from addr to our local address, or -1.
func (n *Network) source(addr, local net.Addr) int {
	ta, ok := addr.(*net.TCPAddr)
	la, lok := local.(*net.TCPAddr)
	if !ok || !lok || n.owners == nil {
		return -1
	}
	owners := n.owners()
	node := -1
	if inode, err := socketInode(ta, la); err == nil {
		node = inodeOwner(inode, owners)
	}
	if node < 0 {
		n.mu.Lock()
		n.unknown++
		n.mu.Unlock()
	}
	return node
}

// socketInode finds the inode of the dialer's end of a connection we
// accepted: the IPv4 socket from addr to local. Both ends must match, since
// an ephemeral port is reused for other destinations (and lingers in
// TIME_WAIT, inode 0).
func socketInode(addr, local *net.TCPAddr) (string, error) {
	from, err := procAddr(addr)
	if err != nil {
		return "", err
	}
	to, err := procAddr(local)
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 9 && fields[1] == from && fields[2] == to && fields[9] != "0" {
			return fields[9], nil
		}
	}
	return "", fmt.Errorf("no socket at %v", addr)
}

// procAddr spells an IPv4 address as /proc/net/tcp does.
func procAddr(a *net.TCPAddr) (string, error) {
	ip := a.IP.To4()
	if ip == nil {
		return "", fmt.Errorf("not IPv4: %v", a)
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port), nil
}

// inodeOwner returns the node whose process holds socket inode, or -1.
func inodeOwner(inode string, owners map[int]int) int {
	link := "socket:[" + inode + "]"
	for node, pid := range owners {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && target == link {
				return node
			}
		}
	}
	return -1
}
