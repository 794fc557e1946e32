// Command reaper speaks the Ryuk protocol used by testcontainers: clients connect over TCP
// and send filter lines such as "label=org.testcontainers.session-id=abc"; each line is
// acknowledged with "ACK". When the last client has been gone for RYUK_RECONNECTION_TIMEOUT
// (or nobody connected within RYUK_CONNECTION_TIMEOUT), every container, network and volume
// matching any filter line is removed and the reaper exits.
//
// It talks to the Docker API over its unix socket with the standard library only, so it
// builds without fetching any module.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

type filterSet map[string][]string

type state struct {
	mu      sync.Mutex
	filters map[string]filterSet // keyed by the raw line, so repeats are idempotent
	active  int
	changed chan struct{}
}

func envDuration(name string, def time.Duration) time.Duration {
	if raw := os.Getenv(name); raw != "" {
		if d, err := time.ParseDuration(raw); err == nil {
			return d
		}
		log.Printf("ignoring %s=%q: not a duration", name, raw)
	}
	return def
}

// parseLine turns "label=a=b&label=c=d" into {"label": ["a=b", "c=d"]}.
func parseLine(line string) (filterSet, error) {
	set := filterSet{}
	for _, part := range strings.Split(line, "&") {
		key, value, ok := strings.Cut(part, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("malformed filter %q", part)
		}
		if v, err := url.QueryUnescape(value); err == nil {
			value = v
		}
		set[key] = append(set[key], value)
	}
	return set, nil
}

func (s *state) handle(conn net.Conn) {
	defer conn.Close()
	log.Printf("client connected from %s", conn.RemoteAddr())
	defer log.Printf("client %s gone", conn.RemoteAddr())
	s.mu.Lock()
	s.active++
	s.mu.Unlock()
	s.notify()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
		s.notify()
	}()
	scanner := bufio.NewScanner(conn)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		set, err := parseLine(line)
		if err != nil {
			log.Printf("%v", err)
			fmt.Fprint(conn, "ERROR\n")
			continue
		}
		s.mu.Lock()
		s.filters[line] = set
		s.mu.Unlock()
		log.Printf("added filter %s", line)
		fmt.Fprint(conn, "ACK\n")
	}
}

func (s *state) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// waitForIdle returns once no client has been connected for the reconnection timeout, or no
// client ever connected within the connection timeout.
func (s *state) waitForIdle(connectTimeout, reconnectTimeout time.Duration) {
	seen := false
	deadline := time.NewTimer(connectTimeout)
	for {
		select {
		case <-s.changed:
			s.mu.Lock()
			active := s.active
			s.mu.Unlock()
			if active > 0 {
				seen = true
				deadline.Stop()
			} else {
				deadline.Reset(reconnectTimeout)
			}
		case <-deadline.C:
			s.mu.Lock()
			active := s.active
			s.mu.Unlock()
			if active == 0 {
				if !seen {
					log.Printf("no client connected within %s", connectTimeout)
				}
				return
			}
		}
	}
}

type dockerAPI struct{ http *http.Client }

func newDockerAPI(socket string) dockerAPI {
	transport := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}
	return dockerAPI{http: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
}

func (d dockerAPI) do(method, path string, query url.Values, out any) (int, error) {
	req, err := http.NewRequest(method, "http://docker/v1.41"+path+"?"+query.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode, nil
}

func filterQuery(set filterSet) url.Values {
	body := map[string]map[string]bool{}
	for key, values := range set {
		body[key] = map[string]bool{}
		for _, v := range values {
			body[key][v] = true
		}
	}
	raw, _ := json.Marshal(body)
	return url.Values{"filters": {string(raw)}}
}

func (d dockerAPI) reap(sets []filterSet, self string) {
	for _, set := range sets {
		var containers []struct{ Id string }
		q := filterQuery(set)
		q.Set("all", "1")
		if _, err := d.do("GET", "/containers/json", q, &containers); err != nil {
			log.Printf("listing containers: %v", err)
		}
		for _, c := range containers {
			if self != "" && strings.HasPrefix(c.Id, self) {
				continue
			}
			code, err := d.do("DELETE", "/containers/"+c.Id, url.Values{"force": {"1"}, "v": {"1"}}, nil)
			log.Printf("removed container %.12s: status %d err %v", c.Id, code, err)
		}
	}
	for _, set := range sets {
		var networks []struct{ Id, Name string }
		if _, err := d.do("GET", "/networks", filterQuery(set), &networks); err != nil {
			log.Printf("listing networks: %v", err)
		}
		for _, n := range networks {
			// Endpoints of just-removed containers can linger for a moment.
			for attempt := 0; attempt < 10; attempt++ {
				code, err := d.do("DELETE", "/networks/"+n.Id, nil, nil)
				if err == nil && (code < 300 || code == http.StatusNotFound) {
					log.Printf("removed network %s", n.Name)
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
		var volumes struct{ Volumes []struct{ Name string } }
		if _, err := d.do("GET", "/volumes", filterQuery(set), &volumes); err != nil {
			log.Printf("listing volumes: %v", err)
		}
		for _, v := range volumes.Volumes {
			code, err := d.do("DELETE", "/volumes/"+v.Name, url.Values{"force": {"1"}}, nil)
			log.Printf("removed volume %s: status %d err %v", v.Name, code, err)
		}
	}
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	port := os.Getenv("RYUK_PORT")
	if port == "" {
		port = "8080"
	}
	listener, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	s := &state{filters: map[string]filterSet{}, changed: make(chan struct{}, 1)}
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go s.handle(conn)
		}
	}()
	log.Printf("Started!")
	s.waitForIdle(envDuration("RYUK_CONNECTION_TIMEOUT", time.Minute), envDuration("RYUK_RECONNECTION_TIMEOUT", 10*time.Second))
	listener.Close()

	s.mu.Lock()
	sets := make([]filterSet, 0, len(s.filters))
	for _, set := range s.filters {
		sets = append(sets, set)
	}
	s.mu.Unlock()
	self, _ := os.Hostname()
	socket := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	if socket == "" {
		socket = "/var/run/docker.sock"
	}
	newDockerAPI(socket).reap(sets, self)
	log.Printf("reaped %d filter sets; exiting", len(sets))
}
