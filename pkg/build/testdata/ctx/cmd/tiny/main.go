package main

var version = "dev"

func main() { println("tiny", version) }
