//go:build !linux

package tls13

// threadCPU is not measured outside Linux; the cpu-ns/B metric reads 0.
func threadCPU() int64 { return 0 }

func processCPU() int64 { return 0 }
