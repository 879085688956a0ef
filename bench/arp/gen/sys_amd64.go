package main

// syscall numbers the frozen syscall package does not name on every architecture
const (
	sysRecvmmsg = 299
	sysSendmmsg = 307
)
