# The section-15 client of ../../../shared/seed/socket-tcp-sticky-packets.txt ("高大上版 解决粘包方式(自定制包头)"),
# copied verbatim except the address: 127.0.0.1 and the port from argv[1] instead of 192.168.14.97:8848.
# Used by tests/test_course_scripts.py; it reads its commands from stdin with input().
import socket
import struct
import json
phone=socket.socket(socket.AF_INET,socket.SOCK_STREAM)
try:
    phone.connect(('127.0.0.1', int(__import__('sys').argv[1])))
except ConnectionRefusedError:
    exit('服务端没开')

while 1:
    try:
        data=input('强输入')
        if not data:
            print('不能为空')
        elif data.upper() == 'Q':
            print('您退出了')
            break
        else:
            phone.send(data.encode('utf-8'))
            #获取的包头固定数据字节
            from_server_data = phone.recv(4)
            #转换获取的字节(变成int类型的长度)
            len_totals=struct.unpack('i',from_server_data)[0]
            #获得bytes类型字典的总字节数
            len_totals_bytes=phone.recv(len_totals)
            #获取betes的dic数据(变成json字符串类型)1
            len_totals_bytes_json=len_totals_bytes.decode('utf-8')
            #解开json字符串获取原类型
            len_totals_json_dic=json.loads(len_totals_bytes_json)
            #通过自定义包头的里面的长度获取数据
            total_ppt=b''
            while len(total_ppt)< len_totals_json_dic['total_size']:
                total_ppt+=phone.recv(1024)
            print(f'来自服务的消息:{total_ppt.decode("gbk")}')
            print(f'来自服务的消息:{len(total_ppt)}')
    except ConnectionResetError:
        print('服务端崩溃了连不上')
        break
    except ConnectionAbortedError:
        pass



phone.close()
