//go:build !linux

package proxy

import "net"

func fdLimit() int              { return 0 }
func fdOf(c net.Conn) int       { return -1 }
func isOutOfFDs(err error) bool { return false }
func clientGone(net.Conn) bool  { return false }
