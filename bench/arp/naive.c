/* The naive C baseline of bench/arp: naive.py in C (blocking recv, reply, send; no checks).
 *
 *   naive-c IFACE MAC TARGET
 *
 * What any user-space responder pays at least on this machine: the wake-up, one recv and one send per
 * frame, with no interpreter. Built by run.py with the system C compiler when there is one; only for the
 * benchmark's namespaces (TEST-NET addresses); runs until killed. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  unsigned char mac[6], f[2048], r[60];
  unsigned int m[6];
  struct in_addr tpa;
  if (argc != 4 || sscanf(argv[2], "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6 ||
      !inet_aton(argv[3], &tpa)) {
    fprintf(stderr, "usage: naive-c IFACE MAC TARGET\n");
    return 2;
  }
  for (int i = 0; i < 6; i++) mac[i] = (unsigned char)m[i];
  int s = socket(AF_PACKET, SOCK_RAW, htons(0x0806));
  struct sockaddr_ll sll = {0};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(0x0806);
  sll.sll_ifindex = (int)if_nametoindex(argv[1]);
  if (s < 0 || sll.sll_ifindex == 0 || bind(s, (struct sockaddr *)&sll, sizeof sll) < 0) {
    perror("naive-c");
    return 1;
  }
  int rcvbuf = 2 << 20; /* like naive.py and the announcer's ring */
  setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  static const unsigned char head[10] = {8, 6, 0, 1, 8, 0, 6, 4, 0, 2};
  for (;;) {
    ssize_t n = recv(s, f, sizeof f, 0);
    if (n < 42 || f[20] != 0 || f[21] != 1 || memcmp(f + 38, &tpa, 4) != 0) continue;
    memset(r, 0, sizeof r);
    memcpy(r, f + 22, 6);        /* to the asker */
    memcpy(r + 6, mac, 6);
    memcpy(r + 12, head, 10);    /* ARP reply */
    memcpy(r + 22, mac, 6);
    memcpy(r + 28, &tpa, 4);
    memcpy(r + 32, f + 22, 6);
    memcpy(r + 38, f + 28, 4);
    send(s, r, sizeof r, 0);
  }
}
