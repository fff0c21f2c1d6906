/*
 * ledgerd: a small service whose startup touches the file system, a FIFO-backed
 * spool and a dependency over TCP, then answers HTTP on :8080.
 *
 * Its error message is deliberately unhelpful (as real ones often are): the
 * actual cause is visible only in its system calls (strace -f).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONFIG "/etc/ledgerd/ledgerd.conf"

static char dep_host[128] = "cache", dep_port[16] = "7000", state_dir[256] = "/var/lib/ledgerd",
            spool[256] = "/var/spool/ledgerd/inbox";

static void fail(void) {
    fprintf(stderr, "ledgerd: upstream ledger unavailable, will retry (code 7)\n");
    exit(1);
}

static void set(char *dst, size_t n, const char *v) { snprintf(dst, n, "%s", v); }

static void read_config(void) {
    FILE *f = fopen(CONFIG, "r");
    char line[512];
    if (!f) fail();
    while (fgets(line, sizeof line, f)) {
        char *eq = strchr(line, '='), *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (!eq || line[0] == '#') continue;
        *eq = 0;
        if (!strcmp(line, "dependency_host")) set(dep_host, sizeof dep_host, eq + 1);
        else if (!strcmp(line, "dependency_port")) set(dep_port, sizeof dep_port, eq + 1);
        else if (!strcmp(line, "state_dir")) set(state_dir, sizeof state_dir, eq + 1);
        else if (!strcmp(line, "spool")) set(spool, sizeof spool, eq + 1);
    }
    fclose(f);
}

static void open_state(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/ledger.db", state_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) fail();
    close(fd);
}

static void open_spool(void) {
    int fd = open(spool, O_RDONLY); /* blocks forever when the spool is a FIFO nobody writes */
    if (fd < 0) fail();
    close(fd);
}

static void reach_dependency(void) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(dep_host, dep_port, &hints, &res) != 0) fail();
    int s = socket(res->ai_family, res->ai_socktype, 0);
    if (s < 0 || connect(s, res->ai_addr, res->ai_addrlen) != 0) fail();
    close(s);
    freeaddrinfo(res);
}

static void serve(void) {
    int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(8080), .sin_addr.s_addr = INADDR_ANY};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) fail();
    fprintf(stderr, "ledgerd: serving on :8080\n");
    for (;;) {
        int c = accept(s, NULL, NULL);
        char buf[1024];
        if (c < 0) continue;
        (void)!read(c, buf, sizeof buf);
        const char *r = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
        (void)!write(c, r, strlen(r));
        close(c);
    }
}

int main(void) {
    read_config();
    open_state();
    open_spool();
    reach_dependency();
    serve();
    return 0;
}
