// "Hello, world!" with Go's net/http/fcgi, for the comparison in
// benches/compare.sh: it serves the listening socket on fd 0, as spawn-fcgi
// passes it (spawn-fcgi -n -s /tmp/go.sock -- ./go-hello).
package main

import (
	"fmt"
	"net/http"
	"net/http/fcgi"
	"os"
)

func main() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("Hello, world!"))
	})
	// A nil listener: fcgi.Serve accepts on os.Stdin.
	if err := fcgi.Serve(nil, handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
