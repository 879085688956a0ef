package main

// syscall numbers the frozen syscall package does not name on every architecture
const (
	sysRecvmmsg = 243
	sysSendmmsg = 269
)
