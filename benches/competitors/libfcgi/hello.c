/* "Hello, world!" with libfcgi (Debian libfcgi-dev), threaded: THREADS
 * threads (argv[1], default 16) each accepting on the listening socket on
 * fd 0, as spawn-fcgi passes it, the way libfcgi's threaded example works:
 * spawn-fcgi -n -s /tmp/libfcgi.sock -- ./libfcgi-hello 64
 * For the comparison in benches/compare.sh.
 *
 * It reads the request body before answering. libfcgi leaves that to the
 * app: on a kept connection, unread FCGI_STDIN records are what the next
 * FCGX_Accept_r finds where it expects FCGI_BEGIN_REQUEST, and it closes
 * the connection. The other apps' libraries drain the body themselves. */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *serve(void *unused) {
    FCGX_Request request;
    char body[16384];
    (void)unused;
    FCGX_InitRequest(&request, 0, 0);
    while (FCGX_Accept_r(&request) == 0) {
        while (FCGX_GetStr(body, sizeof body, request.in) > 0)
            ;
        FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!", request.out);
        FCGX_Finish_r(&request);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 16;
    pthread_t ids[256];
    if (threads < 1 || threads > 256)
        threads = 16;
    if (FCGX_Init() != 0 || FCGX_IsCGI()) {
        fprintf(stderr, "libfcgi-hello: fd 0 is not a listening socket; start it with spawn-fcgi\n");
        return 2;
    }
    for (int i = 0; i < threads; i++)
        pthread_create(&ids[i], NULL, serve, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    return 0;
}
