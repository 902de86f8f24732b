package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// step is one scenario on one stack in one of the -repeat runs: the unit
// of progress.
type step struct {
	run      int // 1-based
	stack    stack
	scenario string // "throughput-16", not "throughput"
}

func (s step) key() string { return s.stack.Name + "/" + s.scenario }

// progress reports on stderr, always: on a terminal one live line with
// the step, N/M and the ETA, redrawn twice a second; otherwise one line
// per finished step, so a piped or logged run is never silent.
//
// The ETA counts each remaining step at its own duration in the previous
// run, and steps not yet seen at the mean of the steps done so far.
type progress struct {
	w     io.Writer
	live  bool
	steps []step
	runs  int

	mu       sync.Mutex
	start    time.Time
	done     int
	cur      string
	curStart time.Time
	took     map[string]time.Duration // step key → its last duration
	total    time.Duration            // sum of finished steps
	stop     chan struct{}
	stopped  sync.WaitGroup
}

func newProgress(w io.Writer, live bool, steps []step, runs int) *progress {
	p := &progress{w: w, live: live, steps: steps, runs: runs, start: time.Now(), took: map[string]time.Duration{}, stop: make(chan struct{})}
	if live {
		p.stopped.Add(1)
		go func() {
			defer p.stopped.Done()
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					p.mu.Lock()
					p.draw()
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

// begin marks step i (0-based) as running.
func (p *progress) begin(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.steps[i]
	p.cur = fmt.Sprintf("run %d/%d %s %s", s.run, p.runs, s.stack.Name, s.scenario)
	p.curStart = time.Now()
	if p.live {
		p.draw()
	}
}

// end marks the running step done, with a short summary of what it measured.
func (p *progress) end(i int, summary string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := time.Since(p.curStart)
	p.took[p.steps[i].key()] = d
	p.total += d
	p.done++
	if p.live {
		p.draw()
		return
	}
	if summary != "" {
		summary = ": " + summary
	}
	fmt.Fprintf(p.w, "loadgen: [%d/%d] %s%s (%.1f s) · elapsed %s · ETA %s\n", p.done, len(p.steps), p.cur, summary, d.Seconds(), clock(time.Since(p.start)), p.eta())
}

// eta is the remaining time as m:ss, or "–" before any step finished.
func (p *progress) eta() string {
	if p.done == 0 {
		return na
	}
	mean := p.total / time.Duration(p.done)
	var left time.Duration
	for _, s := range p.steps[p.done:] {
		if d, ok := p.took[s.key()]; ok {
			left += d
		} else {
			left += mean
		}
	}
	if !p.curStart.IsZero() && p.done < len(p.steps) {
		// The running step has used some of its share already.
		left -= min(time.Since(p.curStart), p.took[p.steps[p.done].key()])
	}
	return clock(max(0, left))
}

// draw redraws the live line; p.mu is held.
func (p *progress) draw() {
	fmt.Fprintf(p.w, "\r\033[K[%d/%d] %s … %.1f s · elapsed %s · ETA %s", p.done+1, len(p.steps), p.cur, time.Since(p.curStart).Seconds(), clock(time.Since(p.start)), p.eta())
}

// finish clears the live line and says how long the run took.
func (p *progress) finish() {
	close(p.stop)
	p.stopped.Wait()
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "loadgen: %d steps (%d runs) in %s\n", p.done, p.runs, clock(time.Since(p.start)))
}

// clock prints d as m:ss.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
