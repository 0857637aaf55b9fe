package control

import "testing"

func TestAllowedHost(t *testing.T) {
	for host, want := range map[string]bool{
		"":                       true,
		"127.0.0.1":              true,
		"127.0.0.1:8474":         true,
		"127.9.9.9:1":            true,
		"[::1]:8474":             true,
		"[::1]":                  true,
		"::1":                    true,
		"localhost":              true,
		"LocalHost:8474":         true,
		"grafana.localhost:80":   true,
		"a.b.localhost":          true,
		"evil.example":           false,
		"evil.example:8474":      false,
		"localhost.evil.example": false,
		"evillocalhost":          false,
		"10.0.0.1:8474":          false,
		"[::]:8474":              false,
		"0.0.0.0:8474":           false,
		"127.0.0.1.nip.io:8474":  false,
	} {
		if got := allowedHost(host); got != want {
			t.Errorf("allowedHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:0": true, "localhost:6543": true, "[::1]:0": true,
		"0.0.0.0:0": false, ":6543": false, "[::]:0": false, "db.example:5432": false, "10.1.2.3:1": false, "nope": false,
	} {
		if got := IsLoopbackAddr(addr); got != want {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
