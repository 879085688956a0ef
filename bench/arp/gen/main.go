// argen: a paced ARP request generator for bench/arp (run inside the client network namespace).
//
//	argen -iface eth0 -target 198.51.100.50 -want-mac 02:..:.. -rate 150000 -seconds 1
//	argen -iface eth0 -target 198.51.100.50 -ceiling
//
// One OS thread sends ARP who-has TARGET from -senders rotating sender addresses (198.51.100.100+i,
// the interface's MAC) in bursts of about -period worth of frames with one sendmmsg(2) per burst, on an
// AF_PACKET socket that receives nothing, paced with nanosleep (timer slack 1 ns). Another OS thread
// reads a second AF_PACKET socket (ETH_P_ALL, SO_TIMESTAMPNS, 32 MiB buffer, a classic BPF filter passing
// ARP replies and our own outgoing requests only) with recvmmsg(2), polling every -poll. The kernel
// timestamps the outgoing copy of each request as it leaves the interface and each reply as it arrives
// (same clock, same interface): latency = reply timestamp - request timestamp. Replies (op 2 from
// -want-mac) are matched to requests by the asker's address, FIFO per sender. Every loop is bounded by
// a frame count and a wall-time limit; replies are drained for -drain after the last send. Output: one
// JSON object on stdout. -ceiling: send only, as fast as possible, for -ceiling-seconds.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	ethPArp              = 0x0806
	ethPAll              = 0x0003
	solPacket            = 263
	packetIgnoreOutgoing = 23
	packetQdiscBypass    = 20
	soRcvbufForce        = 33
	soSndbufForce        = 32
	soTimestampNS        = 35
	scmTimestampNS       = soTimestampNS
	soAttachFilter       = 26
	msgWaitForOne        = 0x10000
	frameLen             = 42 // Ethernet 14 + ARP 28 (the veth pads nothing; the kernel accepts short frames)
	rxBatch              = 64
	rxSnap               = 64
	ctlLen               = 64
	prSetTimerslack      = 29
)

type mmsghdr struct {
	hdr syscall.Msghdr
	n   uint32
	_   [4]byte
}

type config struct {
	iface      string
	target     net.IP
	wantMAC    net.HardwareAddr
	rate       int
	seconds    float64
	senders    int
	senderBase net.IP
	burst      int
	period     time.Duration
	drain      time.Duration
	maxFrames  int
	ceiling    bool
	ceilingDur time.Duration
	bypass     bool
	write      bool
	txStamp    bool
	poll       time.Duration
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argen: "+format+"\n", args...)
	os.Exit(2)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func nowNS() int64 { return time.Now().UnixNano() }

func setsockoptInt(fd, level, opt, v int) error {
	return syscall.SetsockoptInt(fd, level, opt, v)
}

// packetSocket opens an AF_PACKET/SOCK_RAW socket bound to ifindex with the given protocol
// (0: a send-only socket that the kernel never queues received frames to).
func packetSocket(ifindex int, proto uint16) (int, error) {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, int(htons(proto)))
	if err != nil {
		return -1, fmt.Errorf("socket(AF_PACKET): %w", err)
	}
	sa := &syscall.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

// attachFilter lets only ARP replies (op 2) reach the receive queue, and with outgoing, also the
// requests this host sends (op 1, packet type PACKET_OUTGOING): their kernel timestamps are the send times.
func attachFilter(fd int, outgoing bool) error {
	prog := []syscall.SockFilter{
		{Code: 0x28, K: 20},              // ldh [20]      ARP operation
		{Code: 0x15, Jt: 0, Jf: 1, K: 2}, // jeq #2
		{Code: 0x06, K: 0x40000},         // ret #262144 (whole frame)
		{Code: 0x06, K: 0},               // ret #0
	}
	if outgoing {
		// the socket is bound to ETH_P_ALL then (only those see outgoing frames): check the EtherType too
		prog = []syscall.SockFilter{
			{Code: 0x28, K: 12},                    // 0: ldh [12]         EtherType
			{Code: 0x15, Jt: 0, Jf: 6, K: ethPArp}, // 1: jeq #0x806, else -> 8
			{Code: 0x28, K: 20},                    // 2: ldh [20]         ARP operation
			{Code: 0x15, Jt: 3, Jf: 0, K: 2},       // 3: jeq #2 -> 7
			{Code: 0x15, Jt: 0, Jf: 3, K: 1},       // 4: jeq #1, else -> 8
			{Code: 0x20, K: 0xfffff004},            // 5: ld #pkttype      (SKF_AD_OFF + SKF_AD_PKTTYPE)
			{Code: 0x15, Jt: 0, Jf: 1, K: 4},       // 6: jeq #4 (PACKET_OUTGOING), else -> 8
			{Code: 0x06, K: 0x40000},               // 7: ret #262144
			{Code: 0x06, K: 0},                     // 8: ret #0
		}
	}
	fp := syscall.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, e := syscall.Syscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, soAttachFilter,
		uintptr(unsafe.Pointer(&fp)), unsafe.Sizeof(fp), 0)
	runtime.KeepAlive(prog)
	if e != 0 {
		return e
	}
	return nil
}

func buildRequest(src net.HardwareAddr, spa, tpa net.IP) []byte {
	f := make([]byte, frameLen)
	for i := 0; i < 6; i++ {
		f[i] = 0xff
	}
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], ethPArp)
	binary.BigEndian.PutUint16(f[14:16], 1)      // htype Ethernet
	binary.BigEndian.PutUint16(f[16:18], 0x0800) // ptype IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:22], 1) // who-has
	copy(f[22:28], src)
	copy(f[28:32], spa.To4())
	// tha zero
	copy(f[38:42], tpa.To4())
	return f
}

// sender owns the send socket and a ring of 2*N prebuilt mmsghdrs (frame i and i+N both point to
// request i), so a burst starting at any sequence number is one contiguous slice: no per-send work.
type sender struct {
	write  bool // one write(2) per frame instead of one sendmmsg(2) per burst (for comparison)
	fd     int
	frames [][]byte
	iov    []syscall.Iovec
	msgs   []mmsghdr
	n      int
}

func newSender(fd int, frames [][]byte) *sender {
	n := len(frames)
	s := &sender{fd: fd, frames: frames, iov: make([]syscall.Iovec, 2*n), msgs: make([]mmsghdr, 2*n), n: n}
	for k := 0; k < 2*n; k++ {
		f := frames[k%n]
		s.iov[k].Base = &f[0]
		s.iov[k].SetLen(len(f))
		s.msgs[k].hdr.Iov = &s.iov[k]
		s.msgs[k].hdr.Iovlen = 1
	}
	return s
}

func (s *sender) how() string {
	if s.write {
		return "write"
	}
	return "sendmmsg"
}

// send pushes count (<= n) frames starting at sequence seq; returns how many the kernel took.
func (s *sender) send(seq, count int) (int, error) {
	start := seq % s.n
	if s.write {
		for k := 0; k < count; k++ {
			if _, err := syscall.Write(s.fd, s.frames[(start+k)%s.n]); err != nil {
				return k, err
			}
		}
		return count, nil
	}
	r, _, e := syscall.Syscall6(sysSendmmsg, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[start])),
		uintptr(count), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

type receiver struct {
	fd      int
	msgs    []mmsghdr
	iov     []syscall.Iovec
	bufs    [][rxSnap]byte
	ctl     [][ctlLen]byte
	want    []byte
	own     []byte
	txCount []int   // outgoing requests seen so far per sender
	tx      []int64 // kernel send timestamp per sequence number (0: not seen)
	index   map[[4]byte]int
	n       int
	count   []int   // replies matched so far per sender
	rx      []int64 // receive timestamp per sequence number
	matched atomic.Int64
	stray   int64 // replies that match no sent request (duplicates, strangers)
	noTS    int64
	sentHi  *atomic.Int64
	stop    atomic.Bool
}

func newReceiver(fd int, want, own net.HardwareAddr, senders []net.IP, maxFrames int, sentHi *atomic.Int64,
) *receiver {
	r := &receiver{fd: fd, want: want, own: own, n: len(senders), count: make([]int, len(senders)),
		txCount: make([]int, len(senders)), tx: make([]int64, maxFrames),
		rx: make([]int64, maxFrames), index: make(map[[4]byte]int, len(senders)), sentHi: sentHi,
		msgs: make([]mmsghdr, rxBatch), iov: make([]syscall.Iovec, rxBatch),
		bufs: make([][rxSnap]byte, rxBatch), ctl: make([][ctlLen]byte, rxBatch)}
	for i, ip := range senders {
		var k [4]byte
		copy(k[:], ip.To4())
		r.index[k] = i
	}
	for k := 0; k < rxBatch; k++ {
		r.iov[k].Base = &r.bufs[k][0]
		r.iov[k].SetLen(rxSnap)
		r.msgs[k].hdr.Iov = &r.iov[k]
		r.msgs[k].hdr.Iovlen = 1
	}
	return r
}

func (r *receiver) timestamp(k int) int64 {
	h := &r.msgs[k].hdr
	c := r.ctl[k][:h.Controllen]
	for len(c) >= syscall.SizeofCmsghdr {
		cm := (*syscall.Cmsghdr)(unsafe.Pointer(&c[0]))
		if cm.Len < syscall.SizeofCmsghdr || int(cm.Len) > len(c) {
			break
		}
		if cm.Level == syscall.SOL_SOCKET && cm.Type == scmTimestampNS && int(cm.Len) >= syscall.SizeofCmsghdr+16 {
			d := c[syscall.SizeofCmsghdr:]
			sec := int64(binary.LittleEndian.Uint64(d[0:8]))
			nsec := int64(binary.LittleEndian.Uint64(d[8:16]))
			return sec*1_000_000_000 + nsec
		}
		step := (int(cm.Len) + 7) &^ 7
		if step >= len(c) {
			break
		}
		c = c[step:]
	}
	return 0
}

// run receives until stop is set. It polls: drain what is queued (MSG_DONTWAIT), then sleep -poll.
// Receive times are the kernel's timestamps, so a late read costs no accuracy, and a thread that is
// not waiting in recv is not woken for every reply (those wake-ups were a quarter of the sending CPU's
// time at 150k/s, the kernel doing the responder's work in the sender's system call).
func (r *receiver) run(poll time.Duration) {
	lockThread()
	flags := uintptr(syscall.MSG_DONTWAIT)
	if poll == 0 {
		flags = msgWaitForOne // blocking, SO_RCVTIMEO bounds each wait
	}
	for !r.stop.Load() {
		for k := 0; k < rxBatch; k++ {
			r.msgs[k].hdr.Control = &r.ctl[k][0]
			r.msgs[k].hdr.SetControllen(ctlLen)
			r.msgs[k].hdr.Flags = 0
		}
		got, _, e := syscall.Syscall6(sysRecvmmsg, uintptr(r.fd), uintptr(unsafe.Pointer(&r.msgs[0])),
			rxBatch, flags, 0, 0)
		if e != 0 {
			if e == syscall.EAGAIN || e == syscall.EINTR {
				if poll > 0 {
					ts := syscall.NsecToTimespec(int64(poll))
					_ = syscall.Nanosleep(&ts, nil)
				}
				continue
			}
			fmt.Fprintf(os.Stderr, "argen: recvmmsg: %v\n", e)
			return
		}
		for k := 0; k < int(got); k++ {
			r.handle(k)
		}
	}
}

func (r *receiver) handle(k int) {
	n := int(r.msgs[k].n)
	b := r.bufs[k][:min(n, rxSnap)]
	if len(b) < frameLen || b[20] != 0 {
		return
	}
	if b[21] == 1 && string(b[22:28]) == string(r.own) {
		r.outgoing(k, b)
		return
	}
	if b[21] != 2 || string(b[22:28]) != string(r.want) {
		return
	}
	var key [4]byte
	copy(key[:], b[38:42])
	i, ok := r.index[key]
	if !ok {
		r.stray++
		return
	}
	seq := r.count[i]*r.n + i
	if int64(seq) >= r.sentHi.Load() || seq >= len(r.rx) {
		r.stray++
		return
	}
	r.count[i]++
	ts := r.timestamp(k)
	if ts == 0 {
		r.noTS++
		ts = nowNS()
	}
	r.rx[seq] = ts
	r.matched.Add(1)
}

// outgoing records the kernel's timestamp of one of our requests leaving the interface.
func (r *receiver) outgoing(k int, b []byte) {
	var key [4]byte
	copy(key[:], b[28:32])
	i, ok := r.index[key]
	if !ok {
		return
	}
	seq := r.txCount[i]*r.n + i
	if seq >= len(r.tx) {
		return
	}
	r.txCount[i]++
	r.tx[seq] = r.timestamp(k)
}

// lockThread wires the calling goroutine to its OS thread and sets that thread's timer slack to 1 ns,
// so a 200 us nanosleep is not stretched by the default 50 us slack.
func lockThread() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall6(syscall.SYS_PRCTL, prSetTimerslack, 1, 0, 0, 0, 0)
}

// sleepUntil sleeps until t0+due (monotonic) with nanosleep (see lockThread for the slack).
func sleepUntil(t0 time.Time, due time.Duration) {
	left := due - time.Since(t0)
	if left <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(left))
	_ = syscall.Nanosleep(&ts, nil)
}

type result struct {
	Mode          string  `json:"mode"`
	Send          string  `json:"send"`
	Rate          int     `json:"rate"`
	AchievedRate  int     `json:"achieved_rate"`
	Sent          int     `json:"sent"`
	Received      int64   `json:"received"`
	Lost          int64   `json:"lost"`
	P50us         float64 `json:"p50_us"`
	P99us         float64 `json:"p99_us"`
	P999us        float64 `json:"p999_us"`
	MaxUs         float64 `json:"max_us"`
	MinUs         float64 `json:"min_us"`
	Stray         int64   `json:"stray"`
	SendErrors    int64   `json:"send_errors"`
	NoTimestamp   int64   `json:"no_timestamp"`
	Burst         int     `json:"burst"`
	TxStamp       string  `json:"tx_stamp"`
	TxKernel      int64   `json:"tx_kernel_stamped"`
	SendSeconds   float64 `json:"send_seconds"`
	TimedOut      bool    `json:"timed_out"`
	LastSendError string  `json:"last_send_error,omitempty"`
}

func percentile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(float64(len(sorted)) * q)
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return math.Round(float64(sorted[i])/100) / 10
}

func nanToNull(r result) any {
	// JSON has no NaN: emit null for latency fields when nothing came back
	m := map[string]any{}
	b, _ := json.Marshal(struct {
		result
		P50us  any `json:"p50_us"`
		P99us  any `json:"p99_us"`
		P999us any `json:"p999_us"`
		MaxUs  any `json:"max_us"`
		MinUs  any `json:"min_us"`
	}{r, finite(r.P50us), finite(r.P99us), finite(r.P999us), finite(r.MaxUs), finite(r.MinUs)})
	_ = json.Unmarshal(b, &m)
	return m
}

func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

func parse() config {
	var c config
	var target, want, base string
	flag.StringVar(&c.iface, "iface", "", "interface to send on and receive from (required)")
	flag.StringVar(&target, "target", "", "IPv4 address asked for (required)")
	flag.StringVar(&want, "want-mac", "", "count only replies from this MAC (required unless -ceiling)")
	flag.IntVar(&c.rate, "rate", 1000, "requests per second")
	flag.Float64Var(&c.seconds, "seconds", 1.0, "sending time")
	flag.IntVar(&c.senders, "senders", 128, "rotating sender addresses")
	flag.StringVar(&base, "sender-base", "198.51.100.100", "first sender address (the rest follow it)")
	flag.IntVar(&c.burst, "burst", 0, "frames per sendmmsg (0: rate x period, 1..64)")
	flag.DurationVar(&c.period, "period", 200*time.Microsecond, "pacing period when -burst is 0")
	flag.DurationVar(&c.drain, "drain", 500*time.Millisecond, "how long to wait for replies after the last send")
	flag.IntVar(&c.maxFrames, "max-frames", 5_000_000, "hard cap on frames sent")
	flag.BoolVar(&c.ceiling, "ceiling", false, "send only, as fast as possible, for -ceiling-seconds; print the rate")
	flag.DurationVar(&c.ceilingDur, "ceiling-seconds", 500*time.Millisecond, "duration of -ceiling")
	flag.BoolVar(&c.write, "write", false, "send with one write(2) per frame instead of sendmmsg(2) per burst")
	flag.DurationVar(&c.poll, "poll", 500*time.Microsecond, "receiver: sleep between drains (0: block in recvmmsg)")
	flag.BoolVar(&c.bypass, "qdisc-bypass", false,
		"PACKET_QDISC_BYPASS on the send socket (packet taps then do not see the frames: needs -tx-stamp=false)")
	flag.BoolVar(&c.txStamp, "tx-stamp", true, "send times from the kernel: the receive socket sees the requests "+
		"leave the interface (false: each frame's share of the sendmmsg call, wrong if the call is preempted)")
	flag.Parse()
	if c.iface == "" || target == "" {
		fail("-iface and -target are required")
	}
	if c.target = net.ParseIP(target).To4(); c.target == nil {
		fail("-target %q is not an IPv4 address", target)
	}
	if c.senderBase = net.ParseIP(base).To4(); c.senderBase == nil {
		fail("-sender-base %q is not an IPv4 address", base)
	}
	if !c.ceiling {
		m, err := net.ParseMAC(want)
		if err != nil || len(m) != 6 {
			fail("-want-mac %q is not an Ethernet MAC address", want)
		}
		c.wantMAC = m
	}
	if c.rate < 1 || c.rate > 10_000_000 {
		fail("-rate %d out of range 1..10000000", c.rate)
	}
	if c.seconds <= 0 || c.seconds > 60 {
		fail("-seconds %v out of range (0, 60]", c.seconds)
	}
	if c.senders < 1 || c.senders > 256 || int(c.senderBase[3])+c.senders > 256 {
		fail("-senders %d does not fit after %s in its /24", c.senders, c.senderBase)
	}
	if c.burst < 0 || c.burst > c.senders {
		fail("-burst %d out of range 0..%d (at most -senders)", c.burst, c.senders)
	}
	if c.period < 10*time.Microsecond || c.period > time.Second {
		fail("-period %v out of range 10us..1s", c.period)
	}
	if c.bypass && c.txStamp {
		fail("-qdisc-bypass needs -tx-stamp=false (frames sent past the qdisc layer are not seen by packet sockets)")
	}
	if c.poll < 0 || c.poll > 100*time.Millisecond {
		fail("-poll %v out of range 0..100ms", c.poll)
	}
	if c.drain < 0 || c.drain > 10*time.Second {
		fail("-drain %v out of range 0..10s", c.drain)
	}
	if c.maxFrames < 1 || c.maxFrames > 50_000_000 {
		fail("-max-frames %d out of range 1..50000000", c.maxFrames)
	}
	if c.ceilingDur <= 0 || c.ceilingDur > 10*time.Second {
		fail("-ceiling-seconds %v out of range (0, 10s]", c.ceilingDur)
	}
	return c
}

func main() {
	c := parse()
	ifc, err := net.InterfaceByName(c.iface)
	if err != nil {
		fail("interface %q: %v", c.iface, err)
	}
	if len(ifc.HardwareAddr) != 6 {
		fail("interface %q has no Ethernet address", c.iface)
	}
	senders := make([]net.IP, c.senders)
	frames := make([][]byte, c.senders)
	for i := range senders {
		ip := make(net.IP, 4)
		copy(ip, c.senderBase)
		ip[3] += byte(i)
		senders[i] = ip
		frames[i] = buildRequest(ifc.HardwareAddr, ip, c.target)
	}
	txfd, err := packetSocket(ifc.Index, 0)
	if err != nil {
		fail("send socket on %s: %v (root or CAP_NET_RAW needed)", c.iface, err)
	}
	defer syscall.Close(txfd)
	if err := setsockoptInt(txfd, syscall.SOL_SOCKET, soSndbufForce, 4<<20); err != nil {
		_ = setsockoptInt(txfd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<20)
	}
	if c.bypass {
		_ = setsockoptInt(txfd, solPacket, packetQdiscBypass, 1)
	}
	tx := newSender(txfd, frames)
	tx.write = c.write
	if c.ceiling {
		runCeiling(c, tx)
		return
	}
	rxProto := uint16(ethPArp)
	if c.txStamp {
		rxProto = ethPAll
	}
	rxfd, err := packetSocket(ifc.Index, rxProto)
	if err != nil {
		fail("receive socket on %s: %v", c.iface, err)
	}
	defer syscall.Close(rxfd)
	if err := setsockoptInt(rxfd, syscall.SOL_SOCKET, soRcvbufForce, 32<<20); err != nil {
		_ = setsockoptInt(rxfd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<20)
	}
	if err := setsockoptInt(rxfd, syscall.SOL_SOCKET, soTimestampNS, 1); err != nil {
		fail("SO_TIMESTAMPNS: %v", err)
	}
	if !c.txStamp {
		if err := setsockoptInt(rxfd, solPacket, packetIgnoreOutgoing, 1); err != nil {
			fail("PACKET_IGNORE_OUTGOING: %v (kernel >= 4.20 needed)", err)
		}
	}
	if err := attachFilter(rxfd, c.txStamp); err != nil {
		fail("SO_ATTACH_FILTER: %v", err)
	}
	tv := syscall.NsecToTimeval(int64(20 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(rxfd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		fail("SO_RCVTIMEO: %v", err)
	}
	drainQueue(rxfd)
	runStep(c, tx, rxfd, ifc.HardwareAddr, senders)
}

// drainQueue drops whatever was queued before the filter was attached.
func drainQueue(fd int) {
	buf := make([]byte, 128)
	for i := 0; i < 100_000; i++ {
		if _, _, err := syscall.Recvfrom(fd, buf, syscall.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

func runCeiling(c config, tx *sender) {
	lockThread()
	var sent, errs int64
	var lastErr error
	t0 := time.Now()
	end := t0.Add(c.ceilingDur)
	seq := 0
	batch := tx.n
	for time.Now().Before(end) && sent < int64(c.maxFrames) {
		n, err := tx.send(seq, batch)
		if err != nil {
			errs++
			lastErr = err
		}
		seq += n
		sent += int64(n)
	}
	el := time.Since(t0).Seconds()
	r := result{Mode: "ceiling", Send: tx.how(), Rate: 0, AchievedRate: int(float64(sent) / el), Sent: int(sent), SendErrors: errs,
		Burst: batch, SendSeconds: round3(el), P50us: math.NaN(), P99us: math.NaN(), P999us: math.NaN(),
		MaxUs: math.NaN(), MinUs: math.NaN()}
	if lastErr != nil {
		r.LastSendError = lastErr.Error()
	}
	emit(r)
}

func stampHow(kernel bool) string {
	if kernel {
		return "kernel (outgoing copy)"
	}
	return "sendmmsg share"
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func emit(r result) {
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(nanToNull(r)); err != nil {
		fail("output: %v", err)
	}
}

func runStep(c config, tx *sender, rxfd int, own net.HardwareAddr, senders []net.IP) {
	total := int(math.Round(float64(c.rate) * c.seconds))
	if total < 1 {
		total = 1
	}
	if total > c.maxFrames {
		total = c.maxFrames
	}
	burst := c.burst
	if burst == 0 {
		burst = int(float64(c.rate) * c.period.Seconds())
		burst = max(1, min(burst, 64, c.senders))
	}
	gap := time.Duration(float64(burst) / float64(c.rate) * 1e9)
	var sentHi atomic.Int64
	rx := newReceiver(rxfd, c.wantMAC, own, senders, total, &sentHi)
	txTimes := make([]int64, total)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rx.run(c.poll)
	}()

	// the sender: this goroutine, on its own OS thread
	lockThread()
	limit := time.Duration((c.seconds*3 + 2) * 1e9)
	var errs int64
	var lastErr error
	sent := 0
	timedOut := false
	t0 := time.Now()
	for b := 0; sent < total; b++ {
		due := time.Duration(b) * gap
		if time.Since(t0) > limit {
			timedOut = true
			break
		}
		sleepUntil(t0, due)
		count := min(burst, total-sent)
		// publish the sequence numbers before the frames exist on the wire, so a fast reply is matched
		sentHi.Store(int64(sent + count))
		a := nowNS()
		n, err := tx.send(sent, count)
		z := nowNS()
		if err != nil {
			errs++
			lastErr = err
			if !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
				fail("sendmmsg: %v", err)
			}
		}
		// frame k of the burst left at roughly a + (z-a)*k/count: the start of its share of the call
		for k := 0; k < n; k++ {
			txTimes[sent+k] = a + (z-a)*int64(k)/int64(count)
		}
		sent += n
		sentHi.Store(int64(sent))
	}
	// burst b occupies [b*gap, (b+1)*gap): the sending time ends one gap after the last burst's start
	sendEl := (time.Since(t0) + gap).Seconds()
	end := time.Now().Add(c.drain)
	for time.Now().Before(end) && rx.matched.Load() < int64(sent) {
		time.Sleep(2 * time.Millisecond)
	}
	rx.stop.Store(true)
	wg.Wait()

	lat := make([]int64, 0, rx.matched.Load())
	var kernelStamped int64
	for s := 0; s < sent; s++ {
		if rx.rx[s] != 0 {
			t := txTimes[s]
			if rx.tx[s] != 0 {
				t = rx.tx[s]
				kernelStamped++
			}
			lat = append(lat, rx.rx[s]-t)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	got := int64(len(lat))
	r := result{Mode: "step", Send: tx.how(), Rate: c.rate, Sent: sent, Received: got, Lost: int64(sent) - got, Stray: rx.stray,
		SendErrors: errs, NoTimestamp: rx.noTS, Burst: burst, TxKernel: kernelStamped, TxStamp: stampHow(c.txStamp), SendSeconds: round3(sendEl), TimedOut: timedOut,
		P50us: percentile(lat, 0.5), P99us: percentile(lat, 0.99), P999us: percentile(lat, 0.999),
		MaxUs: math.NaN(), MinUs: math.NaN()}
	if sendEl > 0 {
		r.AchievedRate = int(math.Round(float64(sent) / sendEl))
	}
	if len(lat) > 0 {
		r.MaxUs = math.Round(float64(lat[len(lat)-1])/100) / 10
		r.MinUs = math.Round(float64(lat[0])/100) / 10
	}
	if lastErr != nil {
		r.LastSendError = lastErr.Error()
	}
	emit(r)
}
