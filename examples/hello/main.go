// Command hello is relay's bundled example: a tiny HTTP server released by `relay run --local`.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/google/uuid"
)

// version is stamped by the build (relay passes -X main.version=<tag>).
var version = "dev"

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()
	instance := uuid.NewString()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from relay's example %s (instance %s)\n", version, instance)
	})
	http.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir("/srv/static"))))
	log.Printf("hello %s listening on %s", version, *addr)
	if err := http.ListenAndServe(*addr, nil); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}
