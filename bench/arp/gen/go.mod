module l2lb/bench/arp/gen

go 1.22
