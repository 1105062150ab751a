/* ports: loopback ports for tests that must not race a test running beside them. Header
 * only: each unit test is its own program. Needs cmocka (included before this header). */
#ifndef MCPHUB_TEST_PORTS_H
#define MCPHUB_TEST_PORTS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* A 127.0.0.1 port where connections are refused for as long as *fd stays open: bound,
 * never listening, so no other test's listener can take it meanwhile. */
static inline int refused_port(int *fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;

    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(*fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(*fd, (const struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

#endif
