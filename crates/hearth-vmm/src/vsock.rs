//! Host side of Firecracker's hybrid vsock: connect to the Unix socket, send
//! `CONNECT <port>\n`, expect `OK <n>\n`, then the stream is the guest connection.
